#!/usr/bin/env bash
# Build the one-folder dynlab bundle (PyInstaller, CPU build of torch) and/or install the
# desktop entry for the current user.
#
#   packaging/build.sh                    build dist/dynlab/ (and report its size)
#   packaging/build.sh --install-desktop  build, then add dynlab to the application menu
#   packaging/build.sh --desktop-only     only install the menu entry (for a pip install:
#                                         it launches `dynlab-gui` from PATH; or the bundle
#                                         in dist/dynlab when that exists)
#   packaging/build.sh --icons            re-render the PNG icons from packaging/icons/dynlab.svg
#   packaging/build.sh --uninstall-desktop  remove the menu entry and icons again
#
# Environment: PYTHON (default: python3) is the interpreter whose packages are bundled;
# XDG_DATA_HOME (default: ~/.local/share) is where the menu entry goes.
# Output goes to ./dist and ./build (both gitignored); never commit them.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
SIZES=(16 22 24 32 48 64 128 256 512)

build=1 desktop=0 icons=0 uninstall=0
for arg in "$@"; do
  case "$arg" in
    --install-desktop) desktop=1 ;;
    --desktop-only) build=0; desktop=1 ;;
    --icons) build=0; icons=1 ;;
    --uninstall-desktop) build=0; uninstall=1 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

render_icons() {
  # Qt's SVG renderer, offscreen: no display and no extra tool (rsvg, inkscape) needed.
  QT_QPA_PLATFORM=offscreen "$PYTHON" "$HERE/render_icons.py" "$HERE/icons/dynlab.svg" "$HERE/icons" "${SIZES[@]}"
}

build_bundle() {
  cd "$ROOT"
  local cuda
  cuda="$("$PYTHON" -c 'import torch; print(torch.version.cuda or "")')"
  if [[ -n "$cuda" ]]; then
    # A CUDA torch drags in ~3 GB of NVIDIA libraries; the bundle is the CPU build.
    echo "build.sh: $PYTHON has a CUDA build of torch ($cuda). Build from an environment with the CPU" >&2
    echo "  build: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" >&2
    exit 1
  fi
  [[ -f "$HERE/icons/png/dynlab-256.png" ]] || render_icons
  local t0=$SECONDS
  # The spec analyses dynlab as installed (lab/ is dynlab, engines/ dynlab.engines, ...):
  # a plain install tree of this checkout, not the editable install's folder mapping.
  local site="$ROOT/build/pyinstaller/site"
  rm -rf "$site"
  "$PYTHON" -m pip install -q --no-deps --target "$site" "$ROOT"
  DYNLAB_SITE="$site" "$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build/pyinstaller" "$HERE/dynlab.spec"
  local secs=$((SECONDS - t0))
  # Smoke test of the bundle itself: the registry sees the engines, the presets are inside.
  "$ROOT/dist/dynlab/dynlab" presets >/dev/null
  local size
  size="$(du -sh "$ROOT/dist/dynlab" | cut -f1)"
  echo "built $ROOT/dist/dynlab in ${secs}s: $size ($(find "$ROOT/dist/dynlab" -type f | wc -l) files)"
  echo "  largest parts:"
  du -sh "$ROOT"/dist/dynlab/_internal/* 2>/dev/null | sort -rh | head -6 | sed 's/^/    /'
}

install_desktop() {
  local exec_cmd
  if [[ -x "$ROOT/dist/dynlab/dynlab" ]]; then
    exec_cmd="$ROOT/dist/dynlab/dynlab"
  elif command -v dynlab-gui >/dev/null; then
    exec_cmd="$(command -v dynlab-gui)"
  elif command -v dynlab >/dev/null; then
    exec_cmd="$(command -v dynlab)"
  else
    echo "build.sh: no bundle in dist/dynlab and no dynlab command on PATH; build or pip install first" >&2
    exit 1
  fi
  [[ -f "$HERE/icons/png/dynlab-256.png" ]] || render_icons
  local apps="$DATA_HOME/applications" hicolor="$DATA_HOME/icons/hicolor"
  mkdir -p "$apps" "$hicolor/scalable/apps"
  for s in "${SIZES[@]}"; do
    mkdir -p "$hicolor/${s}x${s}/apps"
    install -m 644 "$HERE/icons/png/dynlab-$s.png" "$hicolor/${s}x${s}/apps/dynlab.png"
  done
  install -m 644 "$HERE/icons/dynlab.svg" "$hicolor/scalable/apps/dynlab.svg"
  # Quote the path per the Desktop Entry spec (it may contain spaces).
  sed "s|@EXEC@|\"$exec_cmd\"|" "$HERE/dynlab.desktop" > "$apps/dynlab.desktop"
  chmod 644 "$apps/dynlab.desktop"
  command -v desktop-file-validate >/dev/null && desktop-file-validate "$apps/dynlab.desktop" || true
  command -v update-desktop-database >/dev/null && update-desktop-database -q "$apps" || true
  command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$hicolor" 2>/dev/null || true
  echo "installed $apps/dynlab.desktop (Exec=$exec_cmd) and icons under $hicolor"
}

uninstall_desktop() {
  rm -f "$DATA_HOME/applications/dynlab.desktop" "$DATA_HOME/icons/hicolor/scalable/apps/dynlab.svg"
  for s in "${SIZES[@]}"; do rm -f "$DATA_HOME/icons/hicolor/${s}x${s}/apps/dynlab.png"; done
  echo "removed the dynlab menu entry and icons from $DATA_HOME"
}

((icons)) && render_icons
((uninstall)) && uninstall_desktop
((build)) && build_bundle
((desktop)) && install_desktop
exit 0
