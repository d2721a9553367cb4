"""The integration demo (the spec's main job): ``python demo_backend_service_integration.py``."""

from __future__ import annotations

import sys

from backend_services.demo import main

if __name__ == "__main__":
    sys.exit(main())
