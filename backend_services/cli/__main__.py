"""``python -m backend_services.cli`` is the ``backend-services`` command."""

import sys

from . import main

sys.exit(main())
