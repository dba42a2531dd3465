"""Build steps that pyproject.toml cannot express.

- ``web/`` and ``config/`` stay where they are in the source tree but are installed as the
  packages ``live.web`` and ``live.config`` (``package_dir``), so the server reads the pages,
  the front-end modules and the documented defaults through ``importlib.resources`` both in an
  editable install and from a wheel.
- Building a wheel fetches the pages' npm packages from the npm registry (``npm ci`` with the
  committed lock file, in a temporary folder) and copies into the package only the browser
  modules the pages import (``browserModules`` in web/package.json), with their licences. No
  third-party front-end code is committed. An editable install uses ``web/node_modules``
  (``make web-deps``) instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py
from setuptools.errors import SetupError

# web/static/{css,js,img} are data folders of live.web, not packages to list; and the editable
# install's note about same-named folders in the working directory is about this very tree.
warnings.filterwarnings("ignore", message=r"Package 'live\.web\.static")
warnings.filterwarnings("ignore", message=r"Editable installation")

HERE = Path(__file__).resolve().parent
WEB = HERE / "web"


class BuildWithWebModules(build_py):
    """``build_py`` plus the front-end modules, built from the npm registry."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            vendor_web_modules(Path(self.build_lib) / "live" / "web" / "node_modules")


def vendor_web_modules(dest: Path) -> None:
    spec = json.loads((WEB / "package.json").read_text(encoding="utf-8"))
    npm = shutil.which("npm")
    if npm is None:
        raise SetupError("building live-commerce needs npm (it fetches the web pages' modules from the npm "
                         "registry): apt-get install npm, or brew install node")
    with tempfile.TemporaryDirectory(prefix="live-web-build-") as tmp:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(WEB / name, Path(tmp) / name)
        done = subprocess.run([npm, "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--silent"],
                              cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise SetupError(f"npm ci failed for the web pages' modules: {done.stderr.strip()[-500:]}")
        for pkg, rel in spec["browserModules"].items():
            src, out = Path(tmp) / "node_modules" / pkg, dest / pkg
            wanted = [rel, rel + ".map", "package.json", *(p.name for p in src.glob("LICEN[CS]E*"))]
            for name in wanted:
                if (src / name).is_file():
                    (out / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src / name, out / name)
            if not (out / rel).is_file():
                raise SetupError(f"npm package {pkg} has no {rel} (browserModules in web/package.json)")


if __name__ == "__main__":  # how setuptools' build backend runs this file; a test imports it
    setup(
        # Namespace discovery: live/lua and the Alembic folders have no __init__.py but are shipped.
        packages=[*find_namespace_packages(include=["live", "live.*"], exclude=["*.__pycache__"]),
                  "live.web", "live.config"],
        package_dir={"live.web": "web", "live.config": "config"},
        cmdclass={"build_py": BuildWithWebModules},
    )
