"""``python -m live`` is the ``live`` operations command."""

import sys

from live.cli import main

sys.exit(main())
