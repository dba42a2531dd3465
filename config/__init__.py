"""Installed as the package ``live.config`` (see ``package-dir`` in setup.py): ``default.toml``
documents every setting and its default (``live.core.settings.Settings`` is the source)."""
