#!/usr/bin/env bash
# Install what the tests need and run every check CI runs: ruff (lint and format), the
# import contracts, mypy and the whole pytest suite. README and .ci/run both call exactly
# this; extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

# System libraries for Qt and Xvfb/Mesa for OpenGL (only those missing), torch==2.13.0
# (CPU build unless one is already installed), then `pip install -e ".[test]"`.
bash tools/setup.sh --test

dirs=(lab engines views tests bench tools)
"$PYTHON" -m ruff check "${dirs[@]}"
"$PYTHON" -m ruff format --check "${dirs[@]}"

# import-linter reads the import graph from installed files, and an editable install of a
# package-dir mapping (lab/ -> dynlab) has none: check the contracts against a real
# install tree of this checkout instead.
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
"$PYTHON" -m pip install -q --no-deps --target "$tree" .
(cd "$tree" && PYTHONPATH="$tree" "$PYTHON" -c \
  'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())' \
  --no-logo --no-cache "$OLDPWD/pyproject.toml")

# The engines and the Qt-free lab are type-checked ([tool.mypy] in pyproject.toml).
PYTHON="$PYTHON" bash tools/typecheck.sh

export QT_QPA_PLATFORM=offscreen
"$PYTHON" -m pytest -q -p no:cacheprovider "$@"
