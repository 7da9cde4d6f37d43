#!/usr/bin/env bash
# Create .venv and install everything the product and its tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    # torch first, pinned: the CPU build. A later unpinned torch would pull the CUDA build.
    .venv/bin/pip install --quiet "torch==2.13.0"
    .venv/bin/pip install --quiet -r requirements-dev.txt
    rm -f .venv/.installed-*
    touch "$stamp"
fi
