#!/usr/bin/env bash
# Set everything up (.venv + pinned stack) and run the whole test suite, slow end-to-end tests
# included. Extra arguments go to pytest, e.g. `./scripts/test.sh -m "not slow"` for the fast part.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow
exec .venv/bin/python -m pytest -q "$@"
