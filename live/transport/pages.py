"""The web pages: ``/`` (live rooms), ``/room/{id}`` (viewer), ``/studio`` (streamer),
``/moderation``, and their static assets under ``/static/``.

Pages are plain HTML files in ``web/`` with JS modules and CSS in ``web/static/``. Third-party
browser code (the Socket.IO client, hls.js) is never committed: it is installed from the npm
registry into ``web/node_modules`` (``make web-deps``) and served from there, by a fixed list.

Caching: every page links its assets under ``/static/v/<build>/`` where ``<build>`` is a hash
of the asset files, so those URLs are immutable and cached for a year; relative imports
between modules stay inside the same build. Vendor files carry their package version in the
URL and are immutable too. Pages themselves are ``no-cache`` (revalidated with an ETag), so a
new deploy is picked up at the next load. Everything is read once at start-up: no blocking
file reads in handlers (``FileResponse`` streams files off the event loop).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"

# npm package → the browser-ready ES module it provides (and which the import map names).
VENDOR: dict[str, str] = {
    "socket.io-client": "dist/socket.io.esm.min.js",
    "hls.js": "dist/hls.min.mjs",
}

PAGES: dict[str, str] = {
    "/": "index.html",
    "/room/{room_id}": "room.html",
    "/studio": "studio.html",
    "/moderation": "moderation.html",
}

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

@dataclass
class Site:
    """What the pages need, computed once: the build id, the vendor files, the rendered HTML."""

    root: Path
    build: str = ""
    vendor: dict[str, tuple[str, Path]] = field(default_factory=dict)  # package → (version, file)
    html: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # file name → (body, etag)

    @property
    def static_dir(self) -> Path:
        return self.root / "static"

    def load(self) -> None:
        digest = hashlib.sha256()
        for f in sorted(p for p in self.static_dir.rglob("*") if p.is_file()):
            digest.update(f.relative_to(self.static_dir).as_posix().encode())
            digest.update(f.read_bytes())
        self.build = digest.hexdigest()[:12]
        for pkg, rel in VENDOR.items():
            pkg_dir = self.root / "node_modules" / pkg
            try:
                version = json.loads((pkg_dir / "package.json").read_text())["version"]
            except (OSError, ValueError, KeyError):
                log.warning("web: %s is not installed; run `make web-deps` (npm install --prefix web)", pkg)
                continue
            self.vendor[pkg] = (str(version), pkg_dir / rel)
        imports = {pkg: self.vendor_url(pkg) for pkg in VENDOR}
        importmap = json.dumps({"imports": imports}, indent=1)
        for name in PAGES.values():
            text = (self.root / name).read_text(encoding="utf-8")
            text = text.replace("{{static}}", f"/static/v/{self.build}").replace("{{importmap}}", importmap)
            body = text.encode()
            self.html[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')

    def vendor_url(self, pkg: str) -> str:
        version = self.vendor.get(pkg, ("missing", Path()))[0]
        return f"/static/vendor/{pkg}@{version}/{VENDOR[pkg].rsplit('/', 1)[-1]}"


def _inside(base: Path, rel: str) -> Path:
    """``base/rel`` if it is a file inside ``base`` (no ``..`` escapes), else 404."""
    try:
        path = (base / rel).resolve()
        path.relative_to(base.resolve())
    except (ValueError, OSError):
        raise web.HTTPNotFound() from None
    if not path.is_file():
        raise web.HTTPNotFound()
    return path


def _file(path: Path, cache: str) -> web.FileResponse:
    # FileResponse adds ETag / Last-Modified and answers conditional requests with 304.
    resp = web.FileResponse(path, headers={"Cache-Control": cache})
    if path.suffix in (".js", ".mjs"):
        resp.content_type = "text/javascript"
        resp.charset = "utf-8"
    return resp


def setup(app: web.Application, root: Path = WEB_DIR) -> None:
    """Add the page and static routes to ``app`` (called by ``live.app.factory.create_app``)."""
    site = Site(root)
    site.load()

    def page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            body, etag = site.html[name]
            headers = {"Cache-Control": REVALIDATE, "ETag": etag}
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers=headers)
            return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)

        return handler

    async def vendor(request: web.Request) -> web.StreamResponse:
        spec, fname = request.match_info["spec"], request.match_info["file"]
        pkg, _, version = spec.rpartition("@")
        known = site.vendor.get(pkg)
        if known is None:
            raise web.HTTPNotFound(reason=f"{pkg or spec} is not installed (make web-deps)")
        current, path = known
        # Only the listed module and its source map are served, never the whole node_modules.
        if fname not in (path.name, path.name + ".map"):
            raise web.HTTPNotFound()
        return _file(path.with_name(fname), IMMUTABLE if version == current else REVALIDATE)

    async def versioned(request: web.Request) -> web.StreamResponse:
        path = _inside(site.static_dir, request.match_info["path"])
        return _file(path, IMMUTABLE if request.match_info["build"] == site.build else REVALIDATE)

    async def static(request: web.Request) -> web.StreamResponse:
        return _file(_inside(site.static_dir, request.match_info["path"]), REVALIDATE)

    for route, name in PAGES.items():
        app.router.add_get(route, page(name), name=f"page:{name.removesuffix('.html')}")
    app.router.add_get("/static/vendor/{spec}/{file}", vendor)
    app.router.add_get("/static/v/{build}/{path:.+}", versioned)
    app.router.add_get("/static/{path:.+}", static)
