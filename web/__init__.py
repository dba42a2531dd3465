"""Installed as the package ``live.web`` (see ``package-dir`` in setup.py): the pages, their
static files and the built front-end modules are read through ``importlib.resources``."""
