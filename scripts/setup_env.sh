#!/usr/bin/env bash
# Create (or reuse) .venv in the repository root and install the pinned stack + this package.
# On machines without an NVIDIA GPU the half-size `tensorflow-cpu` wheel of the same version is
# installed instead of `tensorflow` (override with SKU110K_TF=tensorflow or tensorflow-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
TF=${SKU110K_TF:-}
if [ -z "$TF" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TF=tensorflow; else TF=tensorflow-cpu; fi
fi
stamp="$VENV/.installed-$(sha1sum requirements.txt setup.py | sha1sum | cut -c1-12)-$TF"
if [ ! -f "$stamp" ]; then
  echo "Installing the pinned stack into $VENV ($TF) ..."
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  sed "s/^tensorflow==/$TF==/" requirements.txt > "$VENV/requirements.resolved.txt"
  "$VENV/bin/python" -m pip install --quiet -r "$VENV/requirements.resolved.txt"
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
