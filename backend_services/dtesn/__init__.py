"""DTESN membrane services: a deep echo state network behind an HTTP server.

* :mod:`.reservoir` — the seeded deep reservoir (pure numpy);
* :mod:`.service` — the aiohttp service (``/health``, ``/process``, ``/membrane_info``,
  ``/metrics``, admin endpoints), built from :mod:`.state`, :mod:`.processing`,
  :mod:`.reports` and :mod:`.admin`; :mod:`.options` holds ``MembraneOptions``;
* :mod:`.runtime` — the service wired to discovery, configuration and degradation;
* :mod:`.server` — ``python -m backend_services.dtesn`` (one membrane per OS process).
"""

from .faults import FaultState
from .reservoir import DeepReservoir, LevelParams, MembraneKind, MembraneSpec, spectral_radius
from .service import MembraneOptions, MembraneService, sample_inputs

__all__ = [
    "DeepReservoir",
    "FaultState",
    "LevelParams",
    "MembraneKind",
    "MembraneOptions",
    "MembraneService",
    "MembraneSpec",
    "sample_inputs",
    "spectral_radius",
]
