"""The web pages: ``/`` (live rooms), ``/room/{id}`` (viewer), ``/studio`` (streamer),
``/moderation``, and their static assets under ``/static/``.

Pages are plain HTML files in ``web/`` with JS modules and CSS in ``web/static/``, installed as
the package ``live.web`` and read through ``importlib.resources`` (setup.py maps the folder), so
they are found the same way from a source checkout and from a wheel. Third-party browser code
(the Socket.IO client, hls.js) is never committed: it comes from the npm registry — into
``web/node_modules`` for a checkout (``make web-deps``), into the wheel when one is built — and
only the module each package lists in ``browserModules`` of ``web/package.json`` is served.
Without them the pages answer 503 with a page that says what to run, instead of staying blank.

Caching: every page links its assets under ``/static/v/<build>/`` where ``<build>`` is a hash
of the asset files, so those URLs are immutable and cached for a year; relative imports
between modules stay inside the same build. Vendor files carry their package version in the
URL and are immutable too. Pages themselves are ``no-cache`` (revalidated with an ETag), so a
new deploy is picked up at the next load. Everything is read once at start-up: no blocking
file reads in handlers (``FileResponse`` streams files off the event loop).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)



def web_dir() -> Path:
    """The installed ``live.web`` package as a folder (the server streams files off disk)."""
    root = resources.files("live.web")
    if not isinstance(root, Path):
        raise RuntimeError(f"live.web is not a folder on disk ({root!r}): install live-commerce unzipped")
    return root


def browser_modules(root: Path) -> dict[str, str]:
    """npm package → the browser-ready ES module it provides (and which the import map names)."""
    modules: dict[str, str] = json.loads((root / "package.json").read_text(encoding="utf-8"))["browserModules"]
    return modules

PAGES: dict[str, str] = {
    "/": "index.html",
    "/room/{room_id}": "room.html",
    "/studio": "studio.html",
    "/moderation": "moderation.html",
    "/transparency": "transparency.html",
}

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

@dataclass
class Site:
    """What the pages need, computed once: the build id, the vendor files, the rendered HTML."""

    root: Path
    build: str = ""
    modules: dict[str, str] = field(default_factory=dict)  # package → module path inside it
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
        self.modules = browser_modules(self.root)
        for pkg, rel in self.modules.items():
            pkg_dir = self.root / "node_modules" / pkg
            try:
                version = json.loads((pkg_dir / "package.json").read_text())["version"]
            except (OSError, ValueError, KeyError):
                continue
            if (pkg_dir / rel).is_file():
                self.vendor[pkg] = (str(version), pkg_dir / rel)
        if self.missing:
            log.error("web: %s not installed: the pages answer 503 until `make web-deps` "
                      "(npm install --prefix web) has run", ", ".join(self.missing))
        imports = {pkg: self.vendor_url(pkg) for pkg in self.modules}
        importmap = json.dumps({"imports": imports}, indent=1)
        for name in PAGES.values():
            text = (self.root / name).read_text(encoding="utf-8")
            text = text.replace("{{static}}", f"/static/v/{self.build}").replace("{{importmap}}", importmap)
            body = text.encode()
            self.html[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')

    @property
    def missing(self) -> list[str]:
        """Front-end packages the pages import but that are not installed."""
        return [pkg for pkg in self.modules if pkg not in self.vendor]

    def vendor_url(self, pkg: str) -> str:
        version = self.vendor.get(pkg, ("missing", Path()))[0]
        return f"/static/vendor/{pkg}@{version}/{self.modules[pkg].rsplit('/', 1)[-1]}"


MISSING_PAGE = """<!doctype html><meta charset="utf-8"><title>live-commerce: web modules missing</title>
<h1>The web pages cannot run yet</h1>
<p>Their front-end modules ({missing}) are not installed. In a source checkout run
<code>make web-deps</code> (or <code>npm install --prefix web</code>) and restart the server;
an installed wheel carries them (it is built with npm).</p>
<p>页面所需的前端模块未安装：请运行 <code>make web-deps</code> 后重启服务。</p>
"""


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


def setup(app: web.Application, root: Path | None = None) -> None:
    """Add the page and static routes to ``app`` (called by ``live.app.factory.create_app``)."""
    site = Site(root or web_dir())
    site.load()
    missing = MISSING_PAGE.format(missing=html.escape(", ".join(site.missing))).encode()

    def page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            if site.missing:  # a page without its modules would stay blank: say why instead
                return web.Response(status=503, body=missing, content_type="text/html", charset="utf-8",
                                    headers={"Cache-Control": "no-store"})  # security headers: http middleware
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
