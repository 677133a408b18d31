"""The display-library check that runs before Qt: a missing xcb library is named with its package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dynlab import qtcheck

ROOT = Path(__file__).resolve().parents[1]
X11 = {"DISPLAY": ":0"}


def _without(monkeypatch: pytest.MonkeyPatch, *absent: str) -> list[str]:
    """Make the loader fail for ``absent`` sonames, as on a machine that lacks them; log the calls."""
    tried: list[str] = []

    def load(soname: str) -> object:
        tried.append(soname)
        if soname in absent:
            raise OSError(f"{soname}: cannot open shared object file: No such file or directory")
        return object()

    monkeypatch.setattr(qtcheck, "_load", load)
    return tried


def test_which_platforms_need_the_xcb_libraries() -> None:
    assert qtcheck.uses_xcb(X11, "linux")
    assert qtcheck.uses_xcb({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert not qtcheck.uses_xcb({**X11, "QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not qtcheck.uses_xcb({}, "linux")  # no display at all: nothing to check
    assert not qtcheck.uses_xcb(X11, "darwin")
    assert not qtcheck.uses_xcb(
        {**X11, "WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}, "linux"
    )


def test_missing_libraries_are_named_with_their_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _without(monkeypatch, "libxcb-icccm.so.4", "libxcb-keysyms.so.1")
    message = qtcheck.check(X11, "linux")
    assert message is not None
    assert set(tried) == set(qtcheck.QT_XCB_LIBRARIES)  # every library is tried, not just the first
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in message
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1\n" in message
    assert "libxcb-cursor0" not in message  # Qt's own hint, wrong on a fresh Debian


def test_nothing_to_say_when_everything_loads_or_qt_runs_offscreen(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch)
    assert qtcheck.check(X11, "linux") is None
    tried = _without(monkeypatch, "libxcb-icccm.so.4")
    assert qtcheck.check({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert tried == []  # offscreen: nothing is even loaded


def test_every_library_qt_needs_loads_here() -> None:
    """The real loader on this machine (tools/test.sh installed the packages): nothing is missing."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the xcb plugin is Linux-only")
    assert qtcheck.missing_libraries() == []


def test_setup_script_mode_prints_the_packages_to_install(monkeypatch, capsys) -> None:
    _without(monkeypatch, "libGL.so.1", "libEGL.so.1", "libxcb-icccm.so.4")
    assert qtcheck.main(["--packages"]) == 0
    assert capsys.readouterr().out.split() == ["libegl1", "libgl1", "libxcb-icccm4"]
    assert qtcheck.main([]) == 1
    assert "missing libGL.so.1 (Debian/Ubuntu package libgl1)" in capsys.readouterr().out


def test_dynlab_open_exits_2_with_the_packages_before_qt_is_imported(tmp_path: Path) -> None:
    """The real entry point, in a child without Qt importable: it must stop before touching Qt."""
    code = """
import sys
class BlockQt:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6', 'vispy'):
            raise ImportError('Qt was imported before the library check: ' + name)
sys.meta_path.insert(0, BlockQt())
from dynlab import qtcheck
def load(soname):
    if soname == 'libxcb-keysyms.so.1':
        raise OSError(soname)
qtcheck._load = load
from dynlab.cli import main
sys.exit(main(['open', 'quadratic', '--start']))
"""
    env = {"PATH": "/usr/bin:/bin", "DISPLAY": ":0", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "sudo apt-get install libxcb-keysyms1" in proc.stderr
    assert "Qt was imported" not in proc.stderr
