"""``python -m pipeline``: the same commands as ``labbot``, without the App."""

import sys

from pipeline.cli import main

sys.exit(main())
