"""``python -m cxrgan``: the command line (``cxrgan.cli``)."""

import sys

from cxrgan.cli import main

sys.exit(main())
