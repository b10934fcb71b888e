#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite with pytest. Extra arguments go to pytest.
#   scripts/test.sh            everything (the README's command)
#   scripts/test.sh --quick    the fast tier: leaves out the tests marked slow (pyproject.toml's markers)
set -euo pipefail
cd "$(dirname "$0")/.."
tier=()
if [ "${1:-}" = "--quick" ]; then
  shift
  tier=(-m "not slow")
fi
scripts/setup.sh
. .venv/bin/activate
export MIRRORC_DATA=${MIRRORC_DATA:-$(cd .. && pwd)/shared/datasets}
python -m pytest -q -rs "${tier[@]}" "$@"
