#!/usr/bin/env bash
# One prepared run on a lent GPU machine (no network there): the GPU tests, `python -m benchmarks.model`
# for the paper-width model and the shipped one, and the GPU tuning table. Writes logs and the
# updated docs/benchmarks.md to $OUT. Packages the machine lacks travel as wheels in .whl/
# (git-ignored through .git/info/exclude), fetched here for its Python 3.12 with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pyzmq==27.3.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 typing_extensions==4.16.0 tomli-w==1.2.0 watchdog==7.1.0
# (docs/benchmarks.md, "On a GPU").
# Usage there: bash tools/gpu_check.sh [quick]   (quick: without the tuning tables)
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
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
step bench-tcan 120 python3 -m benchmarks.model --preset tcan --device cuda \
  --sizes 512,2048 --repeats 3 --write-docs
python3 -c 'from pathlib import Path; from benchmarks.model import random_model
random_model("tcan", Path("/tmp/tcan-random"))'
step daemon 120 python3 -m benchmarks.daemon --sizes 512,2048 --frames 5 \
  --model /tmp/tcan-random --write-docs
[ "${1:-}" = quick ] || step tuning 150 bash -c "python3 -m benchmarks.tuning --device cuda --preset tcan \
  --size 2048 --repeats 3 --write-docs && python3 -m benchmarks.tuning --device cuda \
  --preset tcan --size 512 --repeats 5 --write-docs"
step bench-shipped 60 python3 -m benchmarks.model --device cuda --sizes 512,2048 \
  --repeats 3 --write-docs
cp docs/benchmarks.md "$OUT/benchmarks.md"
