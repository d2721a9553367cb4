"""The demo's fixed choices."""

from __future__ import annotations

from typing import Final

__all__ = ["KIND", "LEVELS", "LEVEL_ORDER", "SEED", "SERVICE_NAME"]

KIND: Final = "memory"
"""Membrane kind of the replicas (same kind and seed: any replica gives the same answer)."""
SEED: Final = 7
LEVELS: Final = 4
SERVICE_NAME: Final = "dtesn-service"
LEVEL_ORDER: Final = ("normal", "partial", "minimal", "emergency", "offline")
