"""``python -m vaelab`` is the same as ``vaelab``."""

import sys

from vaelab.cli import main

sys.exit(main())
