"""The wheel is all a user needs: built from this tree (npm runs at build time), installed into
a fresh venv with no source tree on its path and no npm, ``live-server`` started from an empty
folder serves every page with every script, style and import-map entry they name; Chromium
opens the viewer page of that install.

The fresh venv gets the wheel only (``--no-deps``); its dependencies come from this project's
venv through a plain path entry in a ``.pth`` file. A plain entry is not a site dir, so the
``.pth`` files in it — among them the editable install's finder that maps ``live`` to this
tree — are not run: ``live`` can only be the installed wheel, which the test checks.
"""

from __future__ import annotations

import json
import re
import shutil
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import expect

from tests.browser_support import PHONE, chromium
from tests.support import ROOT, Api, RedisServer, free_port, stop_server, wait_healthy

# The wheel build and install is shared by the slow tests below (module-scoped fixture).
SLOW = [pytest.mark.slow, pytest.mark.wheel]


@dataclass
class Installed:
    url: str
    venv: Path
    folder: Path  # the empty folder it was started from
    log: Path


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def installed(redis_server: RedisServer) -> Iterator[Installed]:
    work = Path(tempfile.mkdtemp(prefix="live-wheel-"))
    try:
        wheels = work / "wheels"
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)])
        (wheel,) = wheels.glob("live_commerce-*.whl")
        venv = work / "venv"
        run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
             "--no-deps", "--no-index", str(wheel)])
        target = next(venv.glob("lib/python*/site-packages"))
        (target / "project_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        folder = work / "empty"
        folder.mkdir()
        # No npm, no redis-server, no source tree: PATH is the venv's bin only.
        env = {"PATH": str(venv / "bin"), "HOME": str(work), "LIVE_REDIS_URL": redis_server.url,
               "LIVE_DATA_DIR": str(work / "data"), "LIVE_LOG_LEVEL": "WARNING"}
        where = run([str(venv / "bin" / "python"), "-c", "import live, importlib.util as u; "
                     "print(live.__file__); print(u.find_spec('run_server'))"], cwd=folder, env=env)
        live_file, run_server_spec = where.stdout.split()
        assert Path(live_file).is_relative_to(target), f"live imported from {live_file}, not the wheel"
        assert run_server_spec == "None", "the wheel must not install a top-level run_server module"
        port = free_port()
        log = work / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([str(venv / "bin" / "live-server"), "--port", str(port)], cwd=folder, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            yield Installed(f"http://127.0.0.1:{port}", venv, folder, log)
        finally:
            stop_server(proc)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def wait_up(inst: Installed) -> None:
    try:
        await wait_healthy(inst.url, 60)
    except TimeoutError:
        raise AssertionError(f"installed live-server not healthy:\n{inst.log.read_text()[-3000:]}") from None


def referenced_assets(html: str) -> list[str]:
    """Every script, stylesheet and import-map entry a page names."""
    urls = re.findall(r'<script[^>]*\bsrc="([^"]+)"', html)
    urls += re.findall(r'<link[^>]*\bhref="([^"]+)"', html)
    m = re.search(r'<script type="importmap">(.*?)</script>', html, re.S)
    assert m, "page has no import map"
    urls += json.loads(m.group(1))["imports"].values()
    return [u for u in urls if u.startswith("/")]


@SLOW[0]
@SLOW[1]
async def test_wheel_installs_and_serves_every_page_and_asset(installed: Installed) -> None:
    t0 = time.monotonic()
    await wait_up(installed)
    banner = installed.log.read_text()
    assert f"{installed.url}/studio" in banner and "moderator token:" in banner, banner
    assert not list(installed.folder.iterdir()), "the server wrote into the folder it was started from"
    async with aiohttp.ClientSession() as s:
        async with s.get(installed.url + "/healthz") as r:
            assert r.status == 200, await r.text()
        checked: set[str] = set()
        for page in ("/", "/studio", "/moderation"):
            async with s.get(installed.url + page) as r:
                assert r.status == 200, page
                html = await r.text()
            assets = referenced_assets(html)
            assert any("socket.io-client" in a for a in assets), f"{page} names no Socket.IO client"
            for url in assets:
                async with s.get(installed.url + url) as r:
                    assert r.status == 200, f"{page} names {url}: {r.status}"
                    assert await r.read(), url
                checked.add(url)
        # The API documents and their reference page (web/apidocs) come with the wheel too.
        for url in ("/api/openapi.json", "/api/asyncapi.json", "/api/docs", "/api/docs.js", "/api/docs.css"):
            async with s.get(installed.url + url) as r:
                assert r.status == 200 and await r.read(), url
    assert len(checked) >= 5, checked
    # The ops command of the same install works from the same empty folder.
    done = subprocess.run([str(installed.venv / "bin" / "live"), "defaults"], capture_output=True, text=True,
                          cwd=installed.folder, env={"PATH": str(installed.venv / "bin")}, timeout=60)
    assert done.returncode == 0 and "payment_timeout_s" in done.stdout, done.stderr
    assert time.monotonic() - t0 < 60


@SLOW[0]
@SLOW[1]
@pytest.mark.browser
async def test_viewer_page_runs_in_chromium_against_the_installed_wheel(installed: Installed) -> None:
    await wait_up(installed)
    async with Api(installed.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"], "wheel room")
    async with chromium(installed.url) as pages:
        viewer = await pages.open(f"/room/{room['id']}", PHONE)
        await expect(viewer.locator("#room-title")).to_have_text("wheel room", timeout=15000)
        # The Socket.IO client (a front-end module from the wheel) connected: the viewer counts itself.
        await expect(viewer.locator("#viewers")).to_have_text("1", timeout=15000)
        assert not pages.errors, "JavaScript errors in the pages:\n" + "\n".join(pages.errors)



def test_a_build_without_npm_stops_with_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from setuptools.errors import SetupError

    spec = importlib.util.spec_from_file_location("live_setup", ROOT / "setup.py")
    assert spec and spec.loader
    setup_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_py)  # not __main__: defines the build step, runs no setup()
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm here
    with pytest.raises(SetupError, match=r"^building live-commerce needs npm .*apt-get install npm"):
        setup_py.vendor_web_modules(tmp_path / "out")
    assert not (tmp_path / "out").exists()
