"""Run a membrane as its own OS process: ``python -m backend_services.dtesn --kind memory``.

Once serving, the process prints one JSON line to stdout,
``{"event": "ready", "membrane_id": ..., "host": ..., "port": ..., "pid": ...}``, so a
parent that asked for ``--port 0`` learns the port. SIGTERM or SIGINT stops it gracefully
(health goes 503, it deregisters, in-flight calls finish).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

from ..errors import BackendServicesError
from ..log import configure_logging
from ..settings import UNSET
from .monitors import MONITOR_MODES
from .reservoir import MAX_LEVELS, MembraneKind
from .service import MembraneOptions

__all__ = ["add_membrane_arguments", "main", "options_from_args", "serve"]

ADMIN_TOKEN_ENV = "DTESN_MEMBRANE_ADMIN_TOKEN"


def add_membrane_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``membrane serve`` (shared by the CLI and ``python -m``)."""
    parser.add_argument(
        "--kind",
        choices=[k.value for k in MembraneKind],
        default="memory",
        help="membrane kind (default: memory)",
    )
    parser.add_argument("--id", dest="membrane_id", help="service id (default: dtesn-KIND-PORT)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="port to bind (default: 0 = any free port)"
    )
    parser.add_argument(
        "--levels", type=int, default=4, help=f"reservoir levels, 1..{MAX_LEVELS} (default: 4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default: 0)")
    parser.add_argument("--input-dim", type=int, default=8, help="input vector size (default: 8)")
    parser.add_argument("--output-dim", type=int, default=4, help="readout size (default: 4)")
    parser.add_argument(
        "--depth", type=int, default=None, help="initial membrane_depth (default: all levels)"
    )
    parser.add_argument(
        "--processing-timeout",
        type=float,
        default=30.0,
        help="initial processing_timeout in seconds (default: 30)",
    )
    parser.add_argument(
        "--max-steps", type=int, default=1000, help="most input vectors per request"
    )
    parser.add_argument(
        "--enable-faults",
        action="store_true",
        help="allow POST /admin/faults (crash, hang, slow, errors, pressure) - demos and tests",
    )
    parser.add_argument(
        "--admin-token",
        default=None,
        help=f"bearer token for /admin/* changes (default: ${ADMIN_TOKEN_ENV}, else open)",
    )
    parser.add_argument(
        "--redis",
        "--redis-url",
        dest="redis_url",
        default=None,
        help="shared state: register with discovery and read configuration from this Redis "
        "(default: $DTESN_SERVICE_REDIS_URL, else in-memory: the coordinator pushes config)",
    )
    parser.add_argument(
        "--no-register",
        action="store_true",
        help="with --redis: do not register with discovery",
    )
    parser.add_argument(
        "--service-name",
        default="dtesn-service",
        help="configuration service name (default: dtesn-service)",
    )
    parser.add_argument(
        "--monitors",
        choices=MONITOR_MODES,
        default="system",
        help="degradation signals: system (container/machine CPU and memory, loop lag) or "
        "process (this process's own use only) - both raised by fault 'pressure'",
    )
    parser.add_argument(
        "--last-known-good",
        metavar="PATH",
        default=None,
        help="with --redis: file keeping the last valid configuration ('none': keep none; "
        "default: the configuration manager's per-user state file)",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="log level on stderr (default: WARNING)"
    )
    parser.add_argument("--log-json", action="store_true", help="log as JSON lines")


def options_from_args(ns: argparse.Namespace) -> MembraneOptions:
    """:class:`MembraneOptions` from parsed arguments (raises on invalid values)."""
    return MembraneOptions(
        kind=MembraneKind(ns.kind),
        membrane_id=ns.membrane_id,
        host=ns.host,
        port=ns.port,
        levels=ns.levels,
        seed=ns.seed,
        input_dim=ns.input_dim,
        output_dim=ns.output_dim,
        membrane_depth=ns.depth,
        processing_timeout=ns.processing_timeout,
        max_steps=ns.max_steps,
        enable_faults=ns.enable_faults,
        admin_token=ns.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None,
    )


async def serve(ns: argparse.Namespace, *, announce: Any = None) -> int:
    """Run one membrane until SIGTERM/SIGINT; returns the exit code."""
    from .runtime import MembraneRuntime

    options = options_from_args(ns)
    runtime = MembraneRuntime(
        options,
        redis_url=getattr(ns, "redis_url", None) or UNSET,
        register=not ns.no_register,
        service_name=ns.service_name,
        monitors=ns.monitors,
        last_known_good=(
            UNSET
            if ns.last_known_good is None
            else None
            if ns.last_known_good.lower() == "none"
            else ns.last_known_good
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    service = runtime.service
    line = {
        "event": "ready",
        "membrane_id": service.membrane_id,
        "kind": service.spec.kind.value,
        "host": options.host,
        "port": service.port,
        "pid": os.getpid(),
        "shared_state": runtime.shared_state,
    }
    out = announce or sys.stdout
    out.write(json.dumps(line) + "\n")
    out.flush()
    try:
        await stop.wait()
    finally:
        await runtime.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend_services.dtesn",
        description="Run one DTESN membrane service (a deep echo state network over HTTP).",
    )
    add_membrane_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m backend_services.dtesn``."""
    ns = build_parser().parse_args(argv)
    configure_logging(ns.log_level.upper(), json=ns.log_json)
    try:
        return asyncio.run(serve(ns))
    except (BackendServicesError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
