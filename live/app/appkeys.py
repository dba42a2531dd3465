"""Typed keys for what the aiohttp app holds (instead of module globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from live.core.settings import Settings

if TYPE_CHECKING:
    from live.app.services import Services


class ServicesRef:
    """Filled in by the app's lifecycle once the resources are open.

    Routes are registered when the app is created (the router freezes at start-up) but the
    services exist only while it runs; handlers read them through this reference.
    """

    def __init__(self) -> None:
        self._svc: Services | None = None

    def set(self, svc: Services | None) -> None:
        self._svc = svc

    @property
    def running(self) -> bool:
        return self._svc is not None

    def get(self) -> Services:
        if self._svc is None:
            raise RuntimeError("the app is not running")
        return self._svc


SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", ServicesRef)
