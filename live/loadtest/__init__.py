"""Double-11 load tester: ``python -m live.loadtest flash|chat|soak --url URL ...``.

Real Socket.IO viewers (a lean client, :mod:`live.loadtest.client`) join a live room and tap
buy on a flash card (``flash``), storm the chat (``chat``) or mix both for a while (``soak``).
The verdict on oversold, lost and duplicate orders comes from the server's audit endpoint.
"""

from live.loadtest.scenarios import Hooks, LoadConfig, Report, run

__all__ = ["Hooks", "LoadConfig", "Report", "run"]
