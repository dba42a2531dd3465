"""Lua scripts, one ``.lua`` file per atomic operation under ``live/lua/``.

Each is registered once at start-up; ``register_script`` calls EVALSHA and reloads the
script by itself after a NOSCRIPT (a ``SCRIPT FLUSH`` or a Redis restart).
"""

from __future__ import annotations

from importlib import resources
from typing import Any


def source(name: str) -> str:
    return resources.files("live").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    """Attribute access to the registered scripts: ``scripts.buy(keys=[...], args=[...])``."""

    def __init__(self, redis: Any, names: list[str]) -> None:
        self._scripts = {n: redis.register_script(source(n)) for n in names}

    def __getattr__(self, name: str) -> Any:
        try:
            return self._scripts[name]
        except KeyError:
            raise AttributeError(name) from None
