#!/usr/bin/env bash
# mypy on the engines and the Qt-free lab (every module of dynlab but dynlab.ui and dynlab.views).
#
# The editable install is an import hook that mypy cannot follow, so this lays the folders out as
# the wheel does (dynlab/ = lab/, with engines/, views/ and presets/ linked in) in a temporary
# folder and checks the package there. Errors are reported with their paths in this checkout.
# Extra arguments go to mypy. Exits non-zero when mypy finds an error.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/dynlab"
ln -s "$root"/lab/* "$tree/dynlab/"
ln -s "$root/engines" "$tree/dynlab/engines"
ln -s "$root/views" "$tree/dynlab/views"
ln -s "$root/presets" "$tree/dynlab/builtin_presets"

# dynlab.ui and dynlab.views are read for their types (pyproject: follow_imports = "silent")
# but not checked: the Qt side is not typed yet.
status=0
MYPYPATH=$tree "${PYTHON:-python}" -m mypy -p dynlab --exclude '/dynlab/(ui|views)/' "$@" \
  | sed -e "s#$tree/dynlab/engines/#engines/#g" -e "s#$tree/dynlab/views/#views/#g" \
        -e "s#$tree/dynlab/builtin_presets/#presets/#g" -e "s#$tree/dynlab/#lab/#g" \
  || status=$?
exit "$status"
