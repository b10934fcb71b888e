#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the default example end to end: LeNet-5 on MNIST.
#   plan -> compile (train backbone + CPM jointly, split, lower the CPM to an OP-TEE TA)
#   -> evaluate (accuracy gap, split execution vs mirrornet.onnx) -> protected inference on images.
# EPOCHS=N shortens or lengthens training (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export MIRRORC_DATA=${MIRRORC_DATA:-$(cd .. && pwd)/shared/datasets}
OUT=${OUT:-build/lenet5-mnist}
python examples/make_models.py build/models
mirrorc partition build/models/lenet5.onnx --report
mirrorc compile build/models/lenet5.onnx --data mnist -C 2 --epochs "${EPOCHS:-5}" -o "$OUT"
mirrorc evaluate "$OUT" --data mnist
python examples/mnist_digits.py "$MIRRORC_DATA/mnist" build/digits 8
mirrorc run "$OUT" --input build/digits/digits.npy --mode stream
mirrorc run "$OUT" --input build/digits/digit0.png --mode single
