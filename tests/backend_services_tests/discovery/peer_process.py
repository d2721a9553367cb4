"""A discovery process for multi-process tests, driven by lines on stdin.

Usage: ``python peer_process.py REDIS_URL NAME TTL``. It starts an HTTP server, registers
it as NAME, prints ``ready <port>`` and then obeys: ``down`` / ``up`` (its server),
``register <id>`` (another endpoint on the same server), ``quit`` (graceful shutdown).
Each command is acknowledged with ``ok <command>``.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from backend_services.infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceEndpoint,
    ServiceType,
)


async def main(url: str, name: str, ttl: float) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    discovery = ServiceDiscovery(
        redis_url=url,
        health_check_interval=0.1,
        health_check_timeout=0.5,
        max_consecutive_failures=1,
        service_ttl=ttl,
        maintenance_interval=0.2,
        node_id=f"peer-{name}",
    )
    await discovery.initialize()
    await discovery.register_service(
        ServiceEndpoint(name, ServiceType.COGNITIVE_SERVICE, "127.0.0.1", port)
    )
    print(f"ready {port}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line == "quit":
            break
        if line == "down":
            await runner.cleanup()
        elif line == "up":
            runner = web.AppRunner(app, shutdown_timeout=0.2)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
        elif line.startswith("register "):
            await discovery.register_service(
                ServiceEndpoint(line.split()[1], ServiceType.COGNITIVE_SERVICE, "127.0.0.1", port)
            )
        print(f"ok {line}", flush=True)
    await discovery.shutdown()
    await runner.cleanup()
    print("ok quit", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
