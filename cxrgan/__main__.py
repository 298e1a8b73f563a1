"""``python -m cxrgan``: the command line (also the way torchrun starts it)."""

import sys

from cxrgan.cli import main

sys.exit(main())
