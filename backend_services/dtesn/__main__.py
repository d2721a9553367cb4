"""``python -m backend_services.dtesn`` runs one membrane service."""

import sys

from .server import main

sys.exit(main())
