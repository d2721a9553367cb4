"""Fleet commands: ``services``, ``circuits``, ``degradation``, ``config``.

Each parses its arguments, calls :class:`~backend_services.control.operations.FleetOperations`
(the service layer shared with the HTTP control API) and prints the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..settings import UNSET, resolve_redis_url
from .output import Output

__all__ = ["register"]

Common = Callable[..., None]
Action = Callable[[Any, argparse.Namespace, Output], Awaitable[int]]


def _fail(message: str, code: int = 1) -> Exception:
    from . import CommandError

    return CommandError(message, code)


def _redis_url(ns: argparse.Namespace) -> str:
    url = getattr(ns, "redis_url", None) or resolve_redis_url(UNSET)
    if not url:
        raise _fail(
            "no Redis URL: pass --redis-url URL or set DTESN_SERVICE_REDIS_URL "
            "(a fleet shares its state through Redis)",
            2,
        )
    return url


def _with_ops(action: Action) -> Callable[[argparse.Namespace, Output], Awaitable[int]]:
    async def handler(ns: argparse.Namespace, out: Output) -> int:
        from ..control.operations import FleetOperations

        ops = FleetOperations(
            _redis_url(ns),
            config_service=getattr(ns, "service", None) or "dtesn-service",
            feed_block=0.1,  # a one-shot command: short blocking reads, quick to close
        )
        await ops.initialize()
        try:
            return await action(ops, ns, out)
        finally:
            await ops.close()

    return handler


def _group(sub: Any, name: str, help_text: str) -> Any:
    p = sub.add_parser(name, help=help_text, description=help_text)
    inner = p.add_subparsers(dest=f"{name}_command", metavar="ACTION", parser_class=type(p))
    inner.required = True
    return inner


def _cmd(
    group: Any, common: Common, name: str, help_text: str, action: Action, **kw: Any
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = group.add_parser(
        name, help=help_text, description=kw.pop("description", help_text)
    )
    common(p)
    p.set_defaults(handler=_with_ops(action))
    return p


def register(sub: Any, common: Common) -> None:
    _services(sub, common)
    _circuits(sub, common)
    _degradation(sub, common)
    _config(sub, common)


# --- services --------------------------------------------------------------------------


def _service_rows(out: Output, rows: list[dict[str, Any]]) -> list[list[object]]:
    return [
        [
            r["service_id"],
            r["service_type"],
            out.state(r["status"]),
            r["address"],
            f"{r['response_time_ms']:.1f}" if r.get("response_time_ms") is not None else "-",
            r["consecutive_failures"],
        ]
        for r in rows
    ]


_SERVICE_HEADERS = ["id", "type", "status", "address", "rtt ms", "failures"]


def _services(sub: Any, common: Common) -> None:
    group = _group(sub, "services", "registered services and their health")
    p = _cmd(group, common, "list", "list registered services with their health", _services_list)
    p.add_argument("--type", dest="service_type", help="only this service type (dtesn_membrane…)")
    p.add_argument("--status", help="only this status (healthy, unhealthy, starting…)")
    p = _cmd(
        group,
        common,
        "watch",
        "print services as they register, change health and leave (Ctrl-C to stop)",
        _services_watch,
    )
    p.add_argument("--type", dest="service_type", help="only this service type")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between looks (1)")
    p.add_argument("--count", type=int, default=None, help="stop after this many looks")


async def _services_list(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    rows = await ops.list_services(ns.service_type, ns.status)
    out.emit(rows, _SERVICE_HEADERS, _service_rows(out, rows))
    return 0


async def _services_watch(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    if not ns.interval > 0:
        raise _fail(f"--interval={ns.interval}: expected seconds > 0", 2)
    known: dict[str, str] = {}
    looks = 0
    while ns.count is None or looks < ns.count:
        rows = {r["service_id"]: r for r in await ops.list_services(ns.service_type)}
        for sid, row in sorted(rows.items()):
            old = known.get(sid)
            if old != row["status"]:
                change = "registered" if old is None else "status"
                _watch_line(out, change, row, old)
        for sid in sorted(set(known) - set(rows)):
            _watch_line(out, "removed", {"service_id": sid, "status": None}, known[sid])
        known = {sid: row["status"] for sid, row in rows.items()}
        looks += 1
        if ns.count is None or looks < ns.count:
            await asyncio.sleep(ns.interval)  # polling the shared registry
    return 0


def _watch_line(out: Output, change: str, row: dict[str, Any], old: str | None) -> None:
    if out.json_mode:
        out.json_line({"change": change, "old": old, **row})
        return
    sid, new = row["service_id"], row.get("status")
    if change == "registered":
        out.line(f"+ {sid} {out.state(new)} {row.get('address', '')}")
    elif change == "removed":
        out.line(f"- {sid} (was {out.state(old)})")
    else:
        out.line(f"~ {sid} {out.state(old)} -> {out.state(new)}")


# --- circuits --------------------------------------------------------------------------


def _circuits(sub: Any, common: Common) -> None:
    group = _group(sub, "circuits", "circuit breakers shared by the fleet")
    _cmd(group, common, "list", "list breakers with shared state", _circuits_list)
    for name, text in (
        ("open", "force a breaker open fleet-wide (until closed, or --duration seconds)"),
        ("close", "force a breaker closed fleet-wide"),
        ("reset", "reset a breaker fleet-wide: closed, windows cleared"),
    ):
        p = _cmd(group, common, name, text, _circuit_action(name))
        p.add_argument("name", help="breaker name (see 'circuits list')")
        p.add_argument("--reason", default="", help="why (logged)")
        if name == "open":
            p.add_argument("--duration", type=float, default=None, help="seconds to stay open")


def _circuit_rows(out: Output, rows: list[dict[str, Any]]) -> list[list[object]]:
    return [
        [
            r["name"],
            out.state(r["state"]),
            r.get("trigger") or "-",
            r.get("openings") if r.get("openings") is not None else "-",
            f"{r['open_remaining']:.1f}" if r.get("open_remaining") is not None else "-",
        ]
        for r in rows
    ]


_CIRCUIT_HEADERS = ["name", "state", "trigger", "openings", "open for s"]


async def _circuits_list(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    rows = await ops.list_circuits()
    out.emit(rows, _CIRCUIT_HEADERS, _circuit_rows(out, rows))
    return 0


def _circuit_action(action: str) -> Action:
    async def run(ops: Any, ns: argparse.Namespace, out: Output) -> int:
        row = await ops.circuit_action(
            ns.name, action, ns.reason, duration=getattr(ns, "duration", None)
        )
        if row is None:
            raise _fail(f"circuit {ns.name!r}: no shared state after {action}")
        out.emit(row, _CIRCUIT_HEADERS, _circuit_rows(out, [row]))
        return 0

    return run


# --- degradation -----------------------------------------------------------------------


def _degradation(sub: Any, common: Common) -> None:
    group = _group(sub, "degradation", "degradation levels across the fleet")
    _cmd(group, common, "status", "worst level and each service's level", _degradation_status)
    p = _cmd(
        group,
        common,
        "force",
        "force a level on every degradation manager of the fleet (or of one service)",
        _degradation_force,
    )
    p.add_argument("level", help="normal, partial, minimal, emergency or offline")
    p.add_argument(
        "--service", default="fleet", help="one service's managers only (default: fleet, all)"
    )
    p.add_argument("--reason", default="forced by an operator", help="why (shown everywhere)")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until clear)")
    p = _cmd(
        group,
        common,
        "clear",
        "end a forced level (fleet-wide or one service's)",
        _degradation_clear,
    )
    p.add_argument(
        "--service", default="fleet", help="one service's override only (default: fleet, all)"
    )
    p.add_argument("--reason", default="cleared by an operator", help="why (logged)")


async def _degradation_status(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    status = await ops.degradation_status()
    if out.json_mode:
        out.json(status)
        return 0
    override = status.get("fleet_override")
    out.line(
        f"fleet: {out.state(status['worst_level'])}, {status['degraded_services']} of "
        f"{status['total_services']} services degraded"
        + (f"; forced {override['level']} ({override['reason']})" if override else "")
    )
    rows = []
    for name, info in status["services"].items():
        for iid, inst in sorted(info["instances"].items()):
            rows.append(
                [
                    name,
                    out.state(inst.get("level")),
                    "yes" if inst.get("forced") else "no",
                    ", ".join(f"{k} {v:.2f}" for k, v in sorted(inst.get("resources", {}).items())),
                    iid,
                ]
            )
    out.table(["service", "level", "forced", "resources", "instance"], rows)
    return 0


async def _degradation_force(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    from ..control.operations import FLEET

    result = await ops.force_degradation(ns.service, ns.level, ns.reason, ns.duration)
    target = "the fleet" if ns.service == FLEET else f"service {ns.service}"
    out.emit(result, text=f"forced {result['level']} on {target} ({result['reason']})")
    return 0 if result.get("published", True) else 1


async def _degradation_clear(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    result = await ops.clear_degradation(ns.service, ns.reason)
    text = "cleared the forced level" if result["cleared"] else "no forced level was in force"
    out.emit(result, text=text)
    return 0


# --- config ----------------------------------------------------------------------------


def _config(sub: Any, common: Common) -> None:
    group = _group(sub, "config", "the fleet's shared configuration")

    def cmd(name: str, text: str, action: Action) -> argparse.ArgumentParser:
        p = _cmd(group, common, name, text, action)
        p.add_argument(
            "--service", default="dtesn-service", help="configuration service (dtesn-service)"
        )
        return p

    p = cmd("get", "show every value, or one key", _config_get)
    p.add_argument("key", nargs="?", help="a key (dotted names for nested ones)")
    p = cmd("set", "set one value (parsed as JSON, else taken as a string)", _config_set)
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--description", default="", help="why (kept in the history)")
    p = cmd("history", "list versions, oldest first", _config_history)
    p.add_argument("--limit", type=int, default=None, help="only the newest N")
    p = cmd("diff", "what changed between two versions", _config_diff)
    p.add_argument("old", help="version id or number")
    p.add_argument("new", help="version id or number")
    p = cmd("rollback", "restore a version exactly, as a new version", _config_rollback)
    p.add_argument("version", help="version id or number")
    p.add_argument("--description", default="", help="why (kept in the history)")
    p = cmd("snapshot", "mark the current configuration as a named version", _config_snapshot)
    p.add_argument("--description", default="", help="what this version is")
    p = cmd("export", "write the configuration with its history", _config_export)
    p.add_argument("--format", choices=["json", "yaml"], default="json")
    p.add_argument("-o", "--output", default="-", help="file (default: stdout)")
    p = cmd(
        "import", "apply an export (or a plain JSON/YAML document) as one version", _config_import
    )
    p.add_argument("file", help="file to read ('-' for stdin)")
    p.add_argument("--format", choices=["json", "yaml"], default=None, help="default: by suffix")
    p.add_argument("--replace", action="store_true", help="also remove keys the file lacks")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def _config_get(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    if ns.key is None:
        data = await ops.get_config(ns.service)
        rows = [[k, _show(v)] for k, v in sorted(data["values"].items())]
        out.emit(data, ["key", "value"], rows)
        return 0
    entry = await ops.get_config_value(ns.service, ns.key)
    if entry is None:
        raise _fail(f"{ns.service}: configuration key {ns.key!r} is not set")
    out.emit(entry, text=_show(entry["value"]))
    return 0


async def _config_set(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    result = await ops.set_config_value(ns.service, ns.key, _parse_value(ns.value), ns.description)
    out.emit(result, text=f"{ns.key} = {_show(result['value'])} (version {result['version']})")
    return 0


async def _config_history(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    versions = await ops.list_config_versions(ns.service, ns.limit)
    rows = [
        [
            v.get("version"),
            v.get("id") or v.get("version_id"),
            v.get("kind", ""),
            v.get("source", ""),
            v.get("description", ""),
        ]
        for v in versions
    ]
    out.emit(versions, ["version", "id", "kind", "source", "description"], rows)
    return 0


async def _config_diff(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    diff = await ops.diff_config(ns.service, ns.old, ns.new)
    if diff is None:
        raise _fail(f"{ns.service}: no retained version {ns.old!r} or {ns.new!r}")
    if out.json_mode:
        out.json(diff)
        return 0
    for key, value in sorted(diff["added"].items()):
        out.line(f"+ {key} = {_show(value)}")
    for key, value in sorted(diff["removed"].items()):
        out.line(f"- {key} = {_show(value)}")
    for key, change in sorted(diff["changed"].items()):
        out.line(f"~ {key}: {_show(change['old'])} -> {_show(change['new'])}")
    if not (diff["added"] or diff["removed"] or diff["changed"]):
        out.line("(no differences)")
    return 0


async def _config_rollback(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    result = await ops.rollback_config(ns.service, ns.version, ns.description)
    if result is None:
        raise _fail(f"{ns.service}: no retained version {ns.version!r} (see 'config history')")
    out.emit(result, text=f"restored {ns.version} as version {result['version']}")
    return 0


async def _config_snapshot(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    result = await ops.snapshot_config(ns.service, ns.description)
    out.emit(result, text=f"snapshot {result['version_id']} (version {result['version']})")
    return 0


async def _config_export(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    text = await ops.export_config(ns.service, ns.format)
    if ns.output == "-":
        out.stream.write(text if text.endswith("\n") else text + "\n")
        out.stream.flush()
    else:
        await asyncio.to_thread(Path(ns.output).write_text, text, encoding="utf-8")
        out.emit({"written": ns.output}, text=f"wrote {ns.output}")
    return 0


async def _config_import(ops: Any, ns: argparse.Namespace, out: Output) -> int:
    if ns.file == "-":
        data = await asyncio.to_thread(sys.stdin.read)
    else:
        try:
            data = await asyncio.to_thread(Path(ns.file).read_text, encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot read {ns.file}: {exc.strerror}", 2) from None
    fmt = ns.format or ("yaml" if ns.file.endswith((".yaml", ".yml")) else "json")
    result = await ops.import_config(ns.service, data, fmt, replace=ns.replace)
    out.emit(result, text=f"imported {ns.file} as version {result['version']}")
    return 0
