#!/usr/bin/env bash
# Set up everything mirrorc needs on a fresh machine: a virtualenv in .venv with mirrorc installed
# (CPU build of torch first, so pip never pulls a multi-GB CUDA build), the aarch64 cross
# compiler that checks the generated TA sources build freestanding, qemu-user, which runs the
# generated C built for aarch64 (tests/test_ta_board.py), and clang (libFuzzer, ASan, UBSan) for
# the TA fuzzing harness.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
# models: torchvision, timm, onnxscript for the real-model corpus; test brings ray (the local-Ray grid test)
pip install -q -e '.[train,test,models,ray]'
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq gcc-aarch64-linux-gnu) >/dev/null 2>&1 \
      || echo "setup: could not install gcc-aarch64-linux-gnu; the cross-compile test will be skipped" >&2
  fi
fi
if ! command -v qemu-aarch64 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq qemu-user) >/dev/null 2>&1 \
      || echo "setup: could not install qemu-user; the aarch64 execution tests will be skipped" >&2
  fi
fi
if ! command -v clang >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq clang) >/dev/null 2>&1 \
      || echo "setup: could not install clang; the TA fuzzing tests will be skipped" >&2
  fi
fi
echo "setup: ok ($(python --version), torch $(python -c 'import torch;print(torch.__version__)'))"
