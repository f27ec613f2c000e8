#!/usr/bin/env bash
# Set up everything on a fresh machine, idempotently: a virtual environment in .venv, the CPU
# torch pinned by constraints.txt, this package (editable) with its test tools, and nnU-Net's
# trainer discovery (`nnunetv2_cipa setup`). Re-running is cheap: it only reinstalls when
# pyproject.toml, setup.py or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
STAMP="$VENV/.bootstrap-stamp"
HASH="$(cat pyproject.toml setup.py constraints.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[bootstrap] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$HASH" ]]; then
    echo "[bootstrap] installing torch (pinned) and nnunetv2_cipa into $VENV"
    # torch first, from the pin, so that no resolver step can pick a CUDA build.
    "$VENV/bin/pip" install -q -c constraints.txt "$(grep '^torch==' constraints.txt)"
    "$VENV/bin/pip" install -q -c constraints.txt -e ".[test]"
    echo "$HASH" > "$STAMP"
fi
"$VENV/bin/nnunetv2_cipa" setup --quiet
