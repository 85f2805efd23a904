#!/usr/bin/env bash
# One-command set-up for a fresh machine.
#   bash jobs/bootstrap.sh demo   -> install, then run the demo (synthetic clip, bundled model)
#   bash jobs/bootstrap.sh test   -> install, then run the default test suite (pytest)
# torch is installed first and pinned to the CPU build on machines without CUDA, so pip
# never resolves a multi-GB CUDA torch; an already installed torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
what=${1:-test}; shift || true

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[bootstrap] installing torch==2.13.0 (CPU build when available)"
  "$PY" -m pip install -q "torch==2.13.0"
fi
echo "[bootstrap] installing hmrflow (editable) with test, fast-path, Ray and export extras"
"$PY" -m pip install -q --disable-pip-version-check -e ".[test,fast,ray,export]"

export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
case "$what" in
  test) exec "$PY" -m pytest "$@" ;;
  demo) exec hmrflow demo "$@" ;;
  *) echo "usage: bash jobs/bootstrap.sh {demo|test} [args...]" >&2; exit 2 ;;
esac
