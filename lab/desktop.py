"""``dynlab install-desktop``: put dynlab in the application menu of a pip install.

Writes a freedesktop ``.desktop`` entry and the scalable icon under
``$XDG_DATA_HOME`` (default ``~/.local/share``), from package data, so no checkout
is needed (``packaging/build.sh --desktop-only`` does the same from a checkout).
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def install_desktop(exec_cmd: str | None = None) -> list[Path]:
    """Install the menu entry and icon; return the files written."""
    icons = resources.files("dynlab") / "ui" / "icons"
    exec_cmd = exec_cmd or shutil.which("dynlab-gui") or f"{sys.executable} -m dynlab.cli"
    apps = data_home() / "applications"
    scalable = data_home() / "icons" / "hicolor" / "scalable" / "apps"
    apps.mkdir(parents=True, exist_ok=True)
    scalable.mkdir(parents=True, exist_ok=True)
    text = (icons / "dynlab.desktop").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    desktop = apps / "dynlab.desktop"
    desktop.write_text("\n".join(lines).replace("@EXEC@", f'"{exec_cmd}"') + "\n", encoding="utf-8")
    svg = scalable / "dynlab.svg"
    svg.write_bytes((icons / "dynlab.svg").read_bytes())
    return [desktop, svg]


def uninstall_desktop() -> list[Path]:
    """Remove what :func:`install_desktop` wrote; return the files removed."""
    gone = []
    for p in (
        data_home() / "applications" / "dynlab.desktop",
        data_home() / "icons" / "hicolor" / "scalable" / "apps" / "dynlab.svg",
    ):
        if p.exists():
            p.unlink()
            gone.append(p)
    return gone
