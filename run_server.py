"""Start live-commerce from a source checkout: ``python run_server.py [--port 8080] ...``.

The same as the ``live-server`` command; the server lives in ``live.app.main`` (``--help`` there).
"""

import sys

from live.app.main import main

if __name__ == "__main__":
    sys.exit(main())
