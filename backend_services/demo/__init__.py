"""The integration demo: ``python demo_backend_service_integration.py`` (or
``backend-services demo``).

Starts DTESN membrane processes and runs the spec's demonstrations as one live scenario
(see :mod:`.scenario`); exits 0 when everything it set out to show happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the process exit code (0 passed, 1 not, 2 could not start)."""
    from .options import build_demo_parser
    from .scenario import run_demo

    ns = build_demo_parser().parse_args(list(argv) if argv is not None else None)
    try:
        return asyncio.run(run_demo(ns))
    except KeyboardInterrupt:
        print("interrupted")
        return 130
