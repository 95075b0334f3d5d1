#!/usr/bin/env bash
# scopelite's tests: ./test.sh [PYTEST ARGS...]
#   ./test.sh              every test not marked slow (the default suite)
#   ./test.sh -m slow      the slow ones (real EfficientNetV2B0, long runs)
# Runs in the repository root with the project's .venv; paths are relative to the root.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  echo "test.sh: no .venv in $PWD; install first:" >&2
  echo "  ./demo.sh      (creates .venv and installs, then runs the demo)" >&2
  echo "  or: python3 -m venv .venv && .venv/bin/pip install -e \".[dev]\"" >&2
  exit 2
fi
if ! .venv/bin/python -c "import pytest" 2>/dev/null; then
  echo "test.sh: .venv has no pytest; install the dev extra: .venv/bin/pip install -e \".[dev]\"" >&2
  exit 2
fi
exec .venv/bin/python -m pytest "$@"
