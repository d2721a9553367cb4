"""The integration demo. Grows with the components; for now it shows the foundation."""

from __future__ import annotations

import asyncio

from .settings import load_settings
from .testing import FakeClock


async def _run() -> int:
    settings = load_settings()
    print("backend_services demo")
    print(f"  shared state: {'redis' if settings.redis_url else 'in-memory (embedded default)'}")
    clock = FakeClock(start=0.0)
    await clock.advance(1.0)
    print(f"  clock: fake clock advanced to {clock.monotonic():.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    return asyncio.run(_run())
