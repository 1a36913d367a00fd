"""``python -m funcnet``: the same as the ``funcnet`` command."""

import sys

from funcnet.cli import main

sys.exit(main())
