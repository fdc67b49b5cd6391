#!/usr/bin/env bash
# One prepared run on a lent GPU machine (no network there): the GPU tests, `tcan-live bench`
# for the paper-width model and the shipped one, and the GPU tuning table. Writes logs and the
# updated docs/benchmarks.md to $OUT. Packages the machine lacks travel as wheels in .whl/
# (pyzmq, pydantic and its parts, tomli-w; see docs/benchmarks.md, "GPU").
# Usage there: bash tools/gpu_check.sh [quick]   (quick: without the tuning tables)
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
step() {  # step NAME SECONDS CMD...: run with a limit, log to $OUT/NAME.log, go on on failure
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T))"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "=== $name exit $? ($(date +%T))"
  tail -n 40 "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' \
  | tee -a "$OUT/gpu.txt"
step pytest 100 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py \
  tests/test_metrics.py -k "gpu or trust"
step bench-tcan 120 python3 -m tcan_live._cli bench --preset tcan --device cuda \
  --sizes 512,2048 --repeats 3 --write-docs
python3 -c 'from pathlib import Path; from tcan_live.bench.model import random_model
random_model("tcan", Path("/tmp/tcan-random"))'
step daemon 120 python3 -m tcan_live.bench.daemon --sizes 512,2048 --frames 5 \
  --model /tmp/tcan-random --write-docs
[ "${1:-}" = quick ] || step tuning 150 bash -c "python3 -m tcan_live.bench.tuning --device cuda --preset tcan \
  --size 2048 --repeats 3 --write-docs && python3 -m tcan_live.bench.tuning --device cuda \
  --preset tcan --size 512 --repeats 5 --write-docs"
step bench-shipped 60 python3 -m tcan_live._cli bench --device cuda --sizes 512,2048 \
  --repeats 3 --write-docs
cp docs/benchmarks.md "$OUT/benchmarks.md"
