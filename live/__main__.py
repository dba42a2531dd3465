"""``python -m live`` is the ``live`` operations command."""

import sys

from live.ops.cli import main

sys.exit(main())
