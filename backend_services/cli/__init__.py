"""``backend-services``: the command-line tool.

::

    backend-services demo [--redis URL | --start-redis]
    backend-services membrane serve --kind memory --port 8081
    backend-services serve [--port 8080]       (control API and live dashboard)
    backend-services services list|watch
    backend-services circuits list|open|close|reset NAME
    backend-services degradation status|force|clear
    backend-services config get|set|history|diff|rollback|export|import

Fleet commands act on the fleet's shared state in Redis: ``--redis-url`` or
``DTESN_SERVICE_REDIS_URL``. ``--json`` prints machine-readable output. Exit codes:
0 success, 1 the operation failed, 2 bad usage or configuration, 130 interrupted.
Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ..errors import BackendServicesError, ValidationError
from .output import Output

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CommandError", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, Output], Coroutine[Any, Any, int]]


class CommandError(BackendServicesError):
    """A command could not do what was asked; ``exit_code`` says how to exit."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser, *, top: bool = False, redis: bool = True) -> None:
    """Options accepted before or after the command (``--json`` anywhere)."""
    keep: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    if redis:
        parser.add_argument(
            "--redis-url",
            metavar="URL",
            help="the fleet's Redis (default: $DTESN_SERVICE_REDIS_URL)",
            **({"default": None} if top else keep),
        )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output", **keep)
    parser.add_argument(
        "--no-color",
        action="store_true",
        help="no colours (also when NO_COLOR is set)",
        **keep,
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (every command has ``--help``)."""
    from . import commands

    parser = _Parser(
        prog="backend-services",
        description="Run the DTESN integration demo and membranes; inspect and steer a fleet "
        "(services, circuit breakers, degradation, configuration) through its Redis.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage/configuration error, 130 interrupted.",
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    commands.register(sub, _common)
    return parser


def _run(handler: Handler, ns: argparse.Namespace, out: Output) -> int:
    return asyncio.run(handler(ns, out))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``backend-services`` console script; returns the exit code."""
    parser = build_parser()
    try:
        ns = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(json_mode=bool(getattr(ns, "json", False)), colour=False if ns.no_color else None)
    handler: Handler = ns.handler
    try:
        return _run(handler, ns, out)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (BackendServicesError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
