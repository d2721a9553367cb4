"""The commands of ``backend-services`` (argument parsing and printing only; the work is in
:mod:`backend_services.control.operations`, shared with the HTTP control API)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .output import Output

__all__ = ["register"]

Common = Callable[..., None]


def register(sub: Any, common: Common) -> None:
    """Add every command to the top-level subparsers."""
    _demo(sub, common)
    _membrane(sub, common)
    _serve(sub, common)
    from .fleet import register as register_fleet

    register_fleet(sub, common)


# --- demo ------------------------------------------------------------------------------


def _demo(sub: Any, common: Common) -> None:
    from ..demo.options import add_demo_arguments

    p = sub.add_parser(
        "demo",
        help="run the integration demo (membranes, failures, recovery) in under a minute",
        description="Start DTESN membrane processes and show discovery, circuit breakers, "
        "degradation and live configuration at work while one fails, slows down and "
        "comes back. Exits 1 if something it demonstrates did not happen.",
    )
    add_demo_arguments(p)
    common(p, redis=False)
    p.set_defaults(handler=_run_demo)


async def _run_demo(ns: argparse.Namespace, out: Output) -> int:
    from ..demo.scenario import run_demo

    return await run_demo(ns, colour=out.colour)


# --- serve -----------------------------------------------------------------------------


def _serve(sub: Any, common: Common) -> None:
    from ..control.serve import add_serve_arguments

    p = sub.add_parser(
        "serve",
        help="run the HTTP control API and the live dashboard against the fleet's Redis",
        description="Serve the control API (OpenAPI at /openapi.json), the live dashboard "
        "(/) and Prometheus metrics (/metrics). Changes need the operator token from "
        "$DTESN_CONTROL_TOKEN or --token-file; without one they are disabled.",
    )
    add_serve_arguments(p)
    common(p)
    p.set_defaults(handler=_run_serve)


async def _run_serve(ns: argparse.Namespace, out: Output) -> int:
    from ..control.serve import serve_namespace

    return await serve_namespace(ns, json_lines=out.json_mode)


# --- membrane --------------------------------------------------------------------------


def _membrane(sub: Any, common: Common) -> None:
    from ..dtesn.server import add_membrane_arguments

    p = sub.add_parser("membrane", help="run a DTESN membrane service")
    msub = p.add_subparsers(dest="membrane_command", metavar="ACTION", parser_class=type(p))
    msub.required = True
    serve = msub.add_parser(
        "serve",
        help="serve one membrane over HTTP until interrupted",
        description="Run one DTESN membrane (a deep echo state network) as an HTTP service. "
        "Prints one JSON 'ready' line with the bound port, then serves until SIGTERM/SIGINT.",
    )
    add_membrane_arguments(serve)
    for action in serve._actions:  # keep a --redis-url given before the command
        if action.dest == "redis_url":
            action.default = argparse.SUPPRESS
    common(serve, redis=False)
    serve.set_defaults(handler=_serve_membrane)


async def _serve_membrane(ns: argparse.Namespace, out: Output) -> int:
    from ..dtesn.server import serve
    from ..log import configure_logging

    configure_logging(ns.log_level.upper(), json=ns.log_json)
    return await serve(ns)
