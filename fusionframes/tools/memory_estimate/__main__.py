"""``python -m fusionframes.tools.memory_estimate``: the same command as ``python -m fusionframes estimate-memory``."""

import sys

from .cli import main

sys.exit(main())
