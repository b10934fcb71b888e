#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite with pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export MIRRORC_DATA=${MIRRORC_DATA:-$(cd .. && pwd)/shared/datasets}
python -m pytest -q -rs "$@"
