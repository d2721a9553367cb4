"""Running the control server as a program (the command-line tool's ``serve``).

::

    export DTESN_CONTROL_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')
    backend-services serve --redis-url redis://localhost:6379 --port 8080

:func:`serve` runs until SIGINT/SIGTERM (or until ``stop`` is set); :func:`run_server` is
the blocking form; :func:`add_serve_arguments` and :func:`serve_from_args` wire it into an
:mod:`argparse` command. The token is read from ``DTESN_CONTROL_TOKEN`` or a file
(``--token-file`` / ``DTESN_CONTROL_TOKEN_FILE``), never from a command-line argument
(which other users of the machine could read).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import BackendServicesError
from ..log import get_logger, mask_url
from ..settings import UNSET, Unset, resolve_redis_url
from .backend import ControlBackend
from .security import TOKEN_ENV, TOKEN_FILE_ENV, resolve_token
from .server import ControlServer

__all__ = ["add_serve_arguments", "run_server", "serve", "serve_from_args", "serve_namespace"]

_log = get_logger("control")


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    redis_url: str | Unset | None = UNSET,
    token: str | None = None,
    token_file: str | None = None,
    protect_reads: bool = False,
    config_service: str = "dtesn-service",
    rate: float = 20.0,
    burst: float = 60.0,
    allowed_origins: Iterable[str] = (),
    watch_interval: float = 1.0,
    backend: ControlBackend | None = None,
    stop: asyncio.Event | None = None,
    announce: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Serve the control API and dashboard until stopped; returns an exit code.

    Without ``backend``, the fleet is reached through Redis at ``redis_url`` (else
    ``DTESN_SERVICE_REDIS_URL``, else the settings file). ``announce`` receives the
    ready line (url, whether changes are enabled) once the server listens.
    """
    # an explicit token file wins over the environment
    environ = {TOKEN_FILE_ENV: token_file} if token_file is not None else dict(os.environ)
    secret = resolve_token(token, environ)
    own_backend = backend is None
    if backend is None:
        from .operations import FleetOperations

        url = resolve_redis_url(redis_url)
        ops = FleetOperations(url, config_service=config_service)
        await ops.initialize()
        backend = ops
    server = ControlServer(
        backend,
        token=secret,
        protect_reads=protect_reads,
        rate=rate,
        burst=burst,
        allowed_origins=allowed_origins,
        watch_interval=watch_interval,
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        base = await server.start(host, port)
        info = {
            "event": "ready",
            "url": base + "/",
            "api": base + "/api/v1",
            "openapi": base + "/openapi.json",
            "metrics": base + "/metrics",
            "changes": "enabled" if secret else f"disabled (set {TOKEN_ENV})",
            "reads": "token required" if protect_reads else "open",
            "redis": mask_url(getattr(backend, "redis_url", None) or "") or None,
        }
        if announce is not None:
            announce(info)
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await server.close()
        if own_backend:
            close = getattr(backend, "close", None)
            if close is not None:
                await close()
    return 0


def run_server(**kwargs: Any) -> int:
    """Blocking :func:`serve` (its keyword arguments); returns the exit code."""
    try:
        return asyncio.run(serve(**kwargs))
    except KeyboardInterrupt:
        return 130


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``serve`` (the Redis URL option is the tool's common one)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (8080)")
    parser.add_argument(
        "--token-file",
        default=None,
        help=f"file holding the operator token (default: ${TOKEN_ENV}, else "
        f"${TOKEN_FILE_ENV}; without a token, changes are disabled)",
    )
    parser.add_argument(
        "--protect-reads", action="store_true", help="require the token for reads too"
    )
    parser.add_argument(
        "--config-service",
        default="dtesn-service",
        help="configuration service shown and changed by default (dtesn-service)",
    )
    parser.add_argument(
        "--rate", type=float, default=20.0, help="requests per second per client (20)"
    )
    parser.add_argument("--burst", type=float, default=60.0, help="burst per client (60)")
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="another origin allowed to make changes (e.g. behind a proxy); repeatable",
    )
    parser.add_argument(
        "--watch-interval",
        type=float,
        default=1.0,
        help="seconds between fleet snapshots for the live view (1.0)",
    )


def _printer(json_lines: bool) -> Callable[[dict[str, Any]], None]:
    def announce(info: dict[str, Any]) -> None:
        if json_lines:
            print(json.dumps(info), flush=True)
        else:
            print(
                f"control server at {info['url']} (API {info['api']}, "
                f"OpenAPI {info['openapi']}); changes {info['changes']}; Ctrl-C to stop",
                flush=True,
            )

    return announce


async def serve_namespace(ns: argparse.Namespace, *, json_lines: bool = False) -> int:
    """``await`` :func:`serve` with arguments parsed by :func:`add_serve_arguments` (and
    ``redis_url`` when the namespace has it); prints the ready line."""
    return await serve(
        host=ns.host,
        port=ns.port,
        redis_url=getattr(ns, "redis_url", None) or UNSET,
        token_file=ns.token_file,
        protect_reads=ns.protect_reads,
        config_service=ns.config_service,
        rate=ns.rate,
        burst=ns.burst,
        allowed_origins=ns.allowed_origin,
        watch_interval=ns.watch_interval,
        announce=_printer(json_lines),
    )


def serve_from_args(ns: argparse.Namespace, *, json_lines: bool = False) -> int:
    """Blocking :func:`serve_namespace`; errors become one line on stderr (exit 2)."""
    try:
        return asyncio.run(serve_namespace(ns, json_lines=json_lines))
    except KeyboardInterrupt:
        return 130
    except (BackendServicesError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
