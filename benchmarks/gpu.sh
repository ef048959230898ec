#!/usr/bin/env bash
# One-shot GPU benchmark for a machine without network access.
#
#   bash benchmarks/gpu.sh            # full run: 2M-item graph, paper dims
#   bash benchmarks/gpu.sh --quick    # reduced run (also works on a CPU)
#
# A typical GPU image has torch, torch_geometric and lightning but not the
# pure-Python packages this project also imports (hydra-core, omegaconf,
# antlr4). They are installed from wheels carried next to this script in
# benchmarks/wheels/ (never committed). Fill that folder on a machine WITH
# network access, with the same Python version as the GPU image:
#
#   pip download --no-deps -d benchmarks/wheels \
#       hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 \
#       PyYAML
#
# (antlr4-python3-runtime 4.9.3 is an sdist; `pip wheel --no-deps -w
# benchmarks/wheels antlr4-python3-runtime==4.9.3` turns it into a wheel.)
# faiss is not needed by the benchmark.
#
# Results: printed, and written to benchmarks/results/gpu.md (full run) or
# benchmarks/results/gpu_quick.md (--quick).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=benchmarks/wheels

missing=()
for mod in torch torch_geometric lightning; do
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if ((${#missing[@]})); then
  echo "error: $PY lacks ${missing[*]} (the GPU image must provide torch," \
       "torch_geometric and lightning)" >&2
  exit 1
fi
for pair in hydra:hydra-core omegaconf:omegaconf antlr4:antlr4-python3-runtime \
            yaml:PyYAML; do
  mod=${pair%%:*}; pkg=${pair#*:}
  if ! "$PY" -c "import $mod" 2>/dev/null; then
    if ! ls "$WHEELS"/* >/dev/null 2>&1; then
      echo "error: $pkg is missing and $WHEELS/ is empty; see the header" \
           "of $0 to fill it on a networked machine" >&2
      exit 1
    fi
    "$PY" -m pip install --no-index --find-links "$WHEELS" --no-deps "$pkg"
  fi
done

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'devices', torch.cuda.device_count())"
if [[ "${1:-}" == "--quick" ]]; then
  "$PY" benchmarks/gpu_bench.py --quick --out benchmarks/results/gpu_quick.md
else
  "$PY" benchmarks/gpu_bench.py "$@" --out benchmarks/results/gpu.md
fi
