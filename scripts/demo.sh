#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the default example end to end: LeNet-5 on MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export MIRRORC_DATA=${MIRRORC_DATA:-$(cd .. && pwd)/shared/datasets}
python examples/make_models.py build/models
mirrorc inspect build/models/lenet5.onnx
mirrorc partition build/models/lenet5.onnx --report
