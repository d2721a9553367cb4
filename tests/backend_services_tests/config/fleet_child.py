"""A configuration manager in its own OS process, driven by JSON lines on stdin.

Run as ``python fleet_child.py <redis_url> <service> <last_known_good path>``. Prints
``{"ready": ...}`` once initialized, ``{"event": "change", ...}`` for every change callback,
and one ``{"reply": op, "ok": ..., ...}`` line per command. Commands: set, delete, get, all,
entry, snapshot, rollback, version, versions, metrics, quit.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from backend_services.infrastructure.config_manager import ConfigurationManager


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def _run(cm: ConfigurationManager, cmd: dict[str, Any]) -> Any:
    op = cmd["op"]
    if op == "set":
        return await cm.set_config(cmd["key"], cmd["value"], expected_version=cmd.get("expected"))
    if op == "delete":
        return await cm.delete_config(cmd["key"])
    if op == "get":
        return await cm.get_config(cmd["key"])
    if op == "all":
        return await cm.get_all_config()
    if op == "entry":
        entry = await cm.get_config_entry(cmd["key"])
        return None if entry is None else entry.as_dict()
    if op == "snapshot":
        return await cm.create_version_snapshot(cmd.get("description", ""))
    if op == "rollback":
        return await cm.rollback_to_version(cmd["id"])
    if op == "version":
        return cm.version
    if op == "versions":
        return await cm.list_versions()
    if op == "metrics":
        return cm.get_metrics()
    raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    url, service, lkg = sys.argv[1], sys.argv[2], sys.argv[3]
    cm = ConfigurationManager(
        service, redis_url=url, last_known_good=lkg, environ={}, feed_block=0.5
    )
    await cm.initialize()
    cm.add_global_change_callback(
        lambda k, n, o: _emit(
            {"event": "change", "key": k, "new": n, "old": o, "version": cm.version}
        )
    )
    _emit({"ready": True, "version": cm.version})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            _emit({"reply": cmd["op"], "ok": True, "result": await _run(cm, cmd)})
        except Exception as exc:
            _emit(
                {"reply": cmd["op"], "ok": False, "error": type(exc).__name__, "message": str(exc)}
            )
    await cm.shutdown()
    _emit({"reply": "quit", "ok": True})


if __name__ == "__main__":
    asyncio.run(main())
