#!/usr/bin/env bash
# Install what the tests need (system libraries for Qt/OpenGL, Python packages) and run
# the whole test suite. README and .ci/run both call exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: Xvfb + Mesa for vispy's OpenGL, and the xcb libraries Qt loads.
pkgs=(xvfb xauth libgl1-mesa-dri libegl1 libgl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
      libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0
      libxcb-image0 libxcb-xfixes0 libdbus-1-3 libfontconfig1 libxkbcommon0)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# torch==2.13.0 is pinned in pyproject; on this project's machines it resolves to the CPU build.
python -m pip install -q -e ".[test]"

python -m ruff check lab engines views tests bench
lint-imports

export QT_QPA_PLATFORM=offscreen
python -m pytest -q -p no:cacheprovider "$@"
