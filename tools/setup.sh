#!/usr/bin/env bash
# Set up dynlab from this checkout, in the Python environment that is active (a venv):
#
#   bash tools/setup.sh          system libraries Qt needs + `pip install -e .`
#   bash tools/setup.sh --test   ... + Xvfb/Mesa for the OpenGL tests + `pip install -e ".[test]"`
#
# 1. On Debian/Ubuntu, apt-get installs the X11/OpenGL libraries Qt's xcb plugin links
#    against, only those missing (lab/qtcheck.py knows which; it needs nothing but Python).
#    Elsewhere it names what is missing and goes on.
# 2. torch==2.13.0 from the CPU index (DYNLAB_TORCH_INDEX), unless this environment already
#    has torch 2.13.0 (a CUDA build you installed first is kept). DYNLAB_TORCH_INDEX=
#    (empty), or an index it cannot reach, takes torch from your default pip index.
# 3. pip install -e . (with the test extras for --test).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
TORCH_INDEX="${DYNLAB_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"

test_extras=0
for arg in "$@"; do
  case "$arg" in
    --test) test_extras=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

"$PYTHON" - <<'EOF' || exit 1
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup.sh: dynlab needs Python 3.11 or newer; {sys.executable} is {sys.version.split()[0]}")
if sys.prefix == sys.base_prefix:
    print("setup.sh: note: no virtual environment is active; pip installs into", sys.prefix)
EOF

# --- 1. system libraries ------------------------------------------------------------
if [[ "$(uname -s)" == Linux ]]; then
  read -r -a missing <<<"$("$PYTHON" lab/qtcheck.py --packages)"
  if ((test_extras)); then
    # Xvfb (and xauth, which xvfb-run needs) for the OpenGL tests; Mesa's software GL driver.
    command -v Xvfb >/dev/null || missing+=(xvfb)
    command -v xauth >/dev/null || missing+=(xauth)
    dpkg -s libgl1-mesa-dri >/dev/null 2>&1 || missing+=(libgl1-mesa-dri)
  fi
  if ((${#missing[@]})); then
    if command -v apt-get >/dev/null; then
      echo "setup.sh: installing system packages: ${missing[*]}"
      SUDO=""
      [[ "$(id -u)" -ne 0 ]] && SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
      echo "setup.sh: warning: no apt-get here; install your system's packages for: ${missing[*]}" >&2
    fi
  fi
fi

# --- 2. torch ------------------------------------------------------------------------
have_torch="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
if [[ "${have_torch%%+*}" == 2.13.0 ]]; then
  echo "setup.sh: keeping torch $have_torch"
elif [[ -n "$TORCH_INDEX" ]]; then
  # torch alone from the CPU index (its dependencies come from your default index with
  # dynlab's below); one quick try, so a machine that cannot reach it (a mirror, no
  # network) falls back to the default index instead of retrying for minutes.
  "$PYTHON" -m pip install -q --no-deps --retries 0 --timeout 20 "torch==2.13.0" --index-url "$TORCH_INDEX" ||
    echo "setup.sh: could not install torch from $TORCH_INDEX; taking torch from your default pip index"
fi

# --- 3. dynlab -----------------------------------------------------------------------
if ((test_extras)); then
  "$PYTHON" -m pip install -q -e ".[test]"
else
  "$PYTHON" -m pip install -q -e .
fi
"$PYTHON" -c 'import dynlab, torch; print(f"setup.sh: dynlab {dynlab.__version__} with torch {torch.__version__} ready")'
