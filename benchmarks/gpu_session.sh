#!/usr/bin/env bash
# One short session on a lent GPU machine (no network there), in one call:
#   1. the CUDA test cases that are skipped on CPU-only CI,
#   2. the GPU benchmark (benchmarks/gpu_bench.py),
#   3. ML-1M training runs on the GPU with a wall-clock budget each
#      (quality after far more epochs than the 2-core CPU affords).
#
#   OUT=/some/dir bash benchmarks/gpu_session.sh          # on the GPU host
#   OUT=/tmp/x QUICK=1 bash benchmarks/gpu_session.sh     # CPU dry run
#
# Needs benchmarks/wheels/ (hydra-core, omegaconf, antlr4 wheels, see
# benchmarks/gpu.sh) and the MovieLens cache copied to build/data
# (cp -r ~/.cache/pinsage_pyg build/data): both travel with the call.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a results folder}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
QUICK=${QUICK:-0}
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target /tmp/site benchmarks/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PINSAGE_DATA_ROOT="$PWD/build/data"
(nvidia-smi -L; "$PY" -c "import torch, torch_geometric, lightning;
print('torch', torch.__version__, 'pyg', torch_geometric.__version__,
'lightning', lightning.__version__)") 2>&1 | tee "$OUT/env.txt"

# 2. benchmark alone on the machine (timings)
if [[ $QUICK == 1 ]]; then
  timeout 300 "$PY" benchmarks/gpu_bench.py --quick --out "$OUT/gpu.md" \
    > "$OUT/bench.log" 2>&1
else
  timeout "${BENCH_S:-150}" "$PY" benchmarks/gpu_bench.py \
    --items "${BENCH_ITEMS:-1000000}" --out "$OUT/gpu.md" \
    > "$OUT/bench.log" 2>&1
fi
echo "bench rc=$?" | tee -a "$OUT/status.txt"

# 1 + 3: tests and training runs side by side (quality, not timing)
timeout "${TEST_S:-200}" "$PY" -m pytest -q -p no:cacheprovider \
  tests/sampler/test_device_sampling.py tests/training/test_ddp.py \
  > "$OUT/pytest.log" 2>&1 &
tests=$!

if [[ $QUICK == 1 ]]; then
  TRAIN=(data=movielens_100k trainer.max_epochs=1 data.num_workers=1)
  MAXT=00:00:01:00
else
  TRAIN=(experiment=movielens_1m trainer=gpu trainer.max_epochs=40
         data.num_workers=4 threads=2)
  MAXT=${MAX_TIME:-00:00:02:30}
fi
train() {  # name, overrides...
  local name=$1; shift
  timeout "${TRAIN_S:-240}" "$PY" -c \
    "import sys; from pinsage_pyg.cli import train; sys.exit(train())" \
    "${TRAIN[@]}" "+trainer.max_time=$MAXT" evaluate.baselines=false \
    output.faiss_index=false trainer.enable_progress_bar=false \
    checkpoint.every_n_train_steps=0 "hydra.run.dir=$OUT/$name" "$@" \
    > "$OUT/$name.log" 2>&1
  echo "$name rc=$?" >> "$OUT/status.txt"
}
train long &
train long_asym model.asymmetric=true &
train long_big model.hidden_channels=1024 model.out_channels=256 &
wait $tests; echo "pytest rc=$?" >> "$OUT/status.txt"
wait
tail -3 "$OUT/pytest.log"
cat "$OUT/status.txt"
for d in long long_asym long_big; do
  echo "== $d"; grep -E "PinSage|epoch|Epoch" "$OUT/$d.log" | tail -4
done
cat "$OUT/gpu.md" 2>/dev/null
# keep what comes back small
find "$OUT" -name '*.ckpt' -delete
