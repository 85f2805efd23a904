#!/usr/bin/env bash
# One-command set-up for a fresh machine.
#   bash jobs/bootstrap.sh demo   -> install, then run the demo (synthetic clip, bundled model)
#   bash jobs/bootstrap.sh test   -> install, then run the default test suite (pytest)
#   bash jobs/bootstrap.sh lint   -> install, then ruff (lint + format check) and mypy on the typed packages
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
echo "[bootstrap] installing hmrflow (editable) with test, lint, fast-path, Ray, export and ONNX extras"
"$PY" -m pip install -q --disable-pip-version-check -e ".[test,fast,ray,export,lint,onnx]"

export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
case "$what" in
  test)
    # the report's browser tests need Chromium (Debian package "chromium": /usr/bin/chromium);
    # without it they are skipped, or fail when HMRFLOW_REQUIRE_BROWSER=1 (as in CI, .ci/run)
    if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
        && ! command -v google-chrome >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "[bootstrap] installing chromium (browser tests of the HTML report)"
      apt_log=$(mktemp)
      apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; }
      # a fresh image has no package lists yet: update when the install alone fails
      if ! { apt_install >"$apt_log" 2>&1 || { apt-get update -q >>"$apt_log" 2>&1 && apt_install >>"$apt_log" 2>&1; }; }; then
        echo "[bootstrap] chromium could not be installed: the browser tests will be skipped" \
          "(or fail with HMRFLOW_REQUIRE_BROWSER=1); apt-get said:" >&2
        tail -n 5 "$apt_log" >&2
      fi
      rm -f "$apt_log"
    fi
    exec "$PY" -m pytest "$@" ;;
  demo) exec hmrflow demo "$@" ;;
  lint)
    "$PY" -m ruff check .
    "$PY" -m ruff format --check .
    # mypy resolves hmrflow.* through a tree of links (the package maps the repo's top-level
    # folders to hmrflow.<folder>, which an editable install exposes only through an import hook)
    root=$PWD; tree=$(mktemp -d); trap 'rm -rf "$tree"' EXIT
    mkdir "$tree/hmrflow"
    for d in pipeline stages priors jobs configs; do ln -s "$root/$d" "$tree/hmrflow/$d"; done
    (cd "$tree" && "$PY" -m mypy --config-file "$root/pyproject.toml")
    ;;
  *) echo "usage: bash jobs/bootstrap.sh {demo|test|lint} [args...]" >&2; exit 2 ;;
esac
