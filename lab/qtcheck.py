"""Before Qt starts: are the system libraries of its X11 (xcb) platform plugin there?

PySide6's wheels bring Qt but not the X11 libraries its ``xcb`` platform plugin links
against. When one is missing, Qt prints ``Could not load the Qt platform plugin "xcb"``,
names ``libxcb-cursor0`` whatever is really absent, and aborts the process (exit 134).
:func:`check` loads each library the way the dynamic linker will, before Qt is imported,
and names the exact Debian/Ubuntu packages to install instead.

This module imports nothing but the standard library: ``tools/setup.sh`` runs it as a
script (``python lab/qtcheck.py --packages``) before dynlab is installed, to learn which
packages to ``apt-get install``.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping, Sequence

# What PySide6 6.11's libqxcb.so and libQt6XcbQpa.so.6 link against (``ldd``), beyond the
# C runtime, each with the Debian/Ubuntu package that ships it. libxcb-icccm4 and
# libxcb-keysyms1 are the two a fresh Debian lacks that Qt's own hint never names.
QT_XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
}


def _load(soname: str) -> object:
    """Load a shared library by soname, searching where the dynamic linker will (tests replace this)."""
    return ctypes.CDLL(soname)


def uses_xcb(env: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether Qt will load its xcb plugin: Linux, an X display, and no other platform chosen.

    ``QT_QPA_PLATFORM=offscreen`` (the tests) and a Wayland session (Qt prefers its
    Wayland plugin there) need none of the X11 libraries.
    """
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return False
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen:
        return chosen.split(":")[0].split(";")[0] == "xcb"
    if env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland":
        return False
    return bool(env.get("DISPLAY"))


def missing_libraries(libraries: Sequence[str] = tuple(QT_XCB_LIBRARIES)) -> list[str]:
    """The sonames in ``libraries`` that the dynamic linker cannot load."""
    missing = []
    for soname in libraries:
        try:
            _load(soname)
        except OSError:
            missing.append(soname)
    return missing


def packages_for(missing: Sequence[str]) -> list[str]:
    """The Debian/Ubuntu packages that provide the ``missing`` sonames, sorted, each once."""
    return sorted({QT_XCB_LIBRARIES[s] for s in missing})


def check(env: Mapping[str, str] | None = None, platform: str | None = None) -> str | None:
    """A message for the user when Qt's xcb plugin would fail to load, else ``None``."""
    if not uses_xcb(env, platform):
        return None
    missing = missing_libraries()
    if not missing:
        return None
    return (
        "dynlab: error: Qt's X11 (xcb) platform plugin needs system libraries that are missing: "
        + ", ".join(missing)
        + ".\nInstall them (Debian/Ubuntu) with:\n    sudo apt-get install "
        + " ".join(packages_for(missing))
        + "\nor run `bash tools/setup.sh` from a dynlab checkout, which installs them for you."
    )


def ensure_display_libraries(
    env: Mapping[str, str] | None = None, write: Callable[[str], object] | None = None
) -> bool:
    """Print :func:`check`'s message to stderr and return False when libraries are missing."""
    message = check(env)
    if message is None:
        return True
    (write or sys.stderr.write)(message + "\n")
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """``python lab/qtcheck.py --packages``: print the Debian packages still to install."""
    args = list(sys.argv[1:] if argv is None else argv)
    missing = missing_libraries()
    if args == ["--packages"]:
        print(" ".join(packages_for(missing)))
        return 0
    for soname in missing:
        print(f"missing {soname} (Debian/Ubuntu package {QT_XCB_LIBRARIES[soname]})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
