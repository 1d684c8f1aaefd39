#!/usr/bin/env bash
# Build a virtual environment holding the reference implementation of Moirai-MoE, uni2ts 2.0.0 on
# torch 2.4.1, for regenerating the parity fixtures (scripts/make_parity_fixtures.py) and for the
# benchmarks. moirai-cli never imports it.
#
#   scripts/make-reference-venv.sh DIR
#
# A DIR that already holds a working environment is left as it is. Set TORCH_INDEX_URL to take
# torch from another index, e.g. https://download.pytorch.org/whl/cpu for the CPU-only build
# (the default PyPI wheel brings CUDA libraries: several GB).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
venv=$1
python=$venv/bin/python

works() {
  [ -x "$python" ] && "$python" - <<'PY' 2>/dev/null
import torch
import uni2ts
import uni2ts.model.moirai_moe
from importlib.metadata import version
assert version("uni2ts") == "2.0.0" and torch.__version__.split("+")[0] == "2.4.1"
PY
}

if works; then
  echo "$venv: the reference environment is ready (reused)"
  exit 0
fi

python3 -m venv "$venv"
"$python" -m pip install --quiet --upgrade pip
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "$python" -m pip install --quiet "torch==2.4.1" --index-url "$TORCH_INDEX_URL"
fi
"$python" -m pip install --quiet "uni2ts==2.0.0" "torch==2.4.1"

if ! works; then
  echo "$venv: uni2ts 2.0.0 with torch 2.4.1 does not import; see the pip output above" >&2
  exit 1
fi
echo "$venv: the reference environment is ready (uni2ts 2.0.0, torch $("$python" -c 'import torch; print(torch.__version__)'))"
