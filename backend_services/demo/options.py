"""The demo's command-line options (shared by ``python demo_backend_service_integration.py``
and ``backend-services demo``)."""

from __future__ import annotations

import argparse

__all__ = ["add_demo_arguments", "build_demo_parser"]


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the demo."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--redis",
        dest="redis",
        metavar="URL",
        default=None,
        help="share state through this Redis: each membrane registers itself and reads its "
        "configuration from it, as in production (default: in-memory, nothing to set up)",
    )
    where.add_argument(
        "--start-redis",
        action="store_true",
        help="start a Redis-compatible server for the demo (needs the test extra: "
        "pip install 'backend_services[test]') and run the scenario on it",
    )
    parser.add_argument(
        "--membranes",
        type=int,
        default=3,
        choices=range(3, 7),
        metavar="N",
        help="membrane replicas to start, 3..6 (default: 3)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=60.0,
        help="requests per second sent through the request path (default: 60)",
    )
    parser.add_argument(
        "--dashboard",
        type=int,
        nargs="?",
        const=0,
        default=None,
        metavar="PORT",
        help="also serve the live dashboard (read-only) on 127.0.0.1:PORT (any free port "
        "when PORT is left out) to watch the failures and the recovery",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --dashboard: keep it up this long after the scenario (default 0)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain text output even on a terminal (no live status line, no colours)",
    )
    parser.add_argument(
        "--summary-json",
        metavar="FILE",
        default=None,
        help="also write the measured figures and checks as JSON to FILE",
    )


def build_demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo_backend_service_integration.py",
        description="The backend_services integration demo: DTESN membrane processes kept "
        "available by discovery, circuit breakers, degradation and live configuration, "
        "while one is killed, one slows down, resources run short, and it all recovers.",
    )
    add_demo_arguments(parser)
    return parser
