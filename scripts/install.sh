#!/usr/bin/env bash
# Creates the virtual environment and installs rlcyclegan with everything it needs, on a fresh machine.
#  - system libraries for headless MuJoCo rendering (EGL via Mesa, OSMesa as fallback), when root can apt-get;
#  - torch: kept when the interpreter already has a build (a CUDA machine keeps its CUDA torch); otherwise
#    the CPU build 2.13.0 on machines without an NVIDIA GPU, so no multi-GB CUDA wheel lands on a CPU box.
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}

have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
if ! have_lib libEGL.so.1 || ! have_lib libOSMesa.so || ! have_lib libGL.so.1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[install] adding headless GL libraries (libegl1 libgl1 libosmesa6 libegl-mesa0)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 >/dev/null
  else
    echo "[install] warning: libEGL/libOSMesa not found and cannot apt-get; install libegl1 and libosmesa6" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip setuptools wheel >/dev/null
if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    "$PY" -m pip install -q torch
  else
    "$PY" -m pip install -q "torch==2.13.0"
  fi
fi
"$PY" -m pip install -q -e ".[dev]"
"$PY" -c "import rlcyclegan, torch; print('[install] rlcyclegan', rlcyclegan.__version__, 'torch', torch.__version__)"
