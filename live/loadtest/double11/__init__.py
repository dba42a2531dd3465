"""The Double-11 rehearsal: ``python -m live.loadtest double11`` (docs/operations.md).

``timeline`` reads the phases file, ``crowd`` plays the viewers' sockets (in this process or in
``--procs`` processes), ``driver`` runs the show over HTTP and asks the judge after each phase,
``report`` draws the HTML.
"""
