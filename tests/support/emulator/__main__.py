"""``python -m support.emulator --root DIR --user USER`` (from ``tests/``): see ``cli``."""

import sys

from .cli import main

sys.exit(main())
