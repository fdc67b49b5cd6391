#!/usr/bin/env bash
# One prepared run on a lent GPU machine (no network there): `python -m benchmarks.adapt` at
# step marks (the model scored after 400, 1000, 2000 and 4000 steps of one run), on the held-out
# families at 10 and 30 photons, the shared real pairs and the ceiling (supervised by the truth),
# in processes side by side. Each writes its rows (--rows); they come back as $OUT/rows.tgz, and
# `python -m benchmarks.adapt --from-rows A.jsonl,B.jsonl --write-docs` makes the tables here.
# Needs the wheels of tools/gpu_check.sh in .whl/ and the real pairs copied to
# .gpudata/confocal_sted (both git-ignored through .git/info/exclude; carried).
# Usage there: bash tools/gpu_adapt.sh [SECONDS [long|rule]]   (each process's limit, default 480;
# long: six processes of one acquisition each, to 4000 steps or $BUDGET minutes (3.5), and the ceiling
# without the prior; rule: `tcan-live adapt`'s two runs as shipped (400 steps each, the floor,
# the relaxed prior 0.1) on 32 fresh acquisitions, 16 processes of two: the same steps as on
# the 2-core CPU in 10 minutes, so the rows are what the CPU would give, on many more seeds;
# with STEPS=N each run stops at N steps instead, one acquisition per process, the even seeds)
set -uo pipefail
LIMIT=${1:-480}
ROWS=/tmp/adapt-rows
mkdir -p "$ROWS"
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' \
  | tee -a "$OUT/gpu.txt"
# the adaptation's own time bound per acquisition (--budget-min): a slow GPU still gives rows
COMMON=(--frames 8 --test 2 --size 160 --prior-input frame --device cuda --threads 1
        --at-steps 400,1000,2000,4000 --budget-min 1.5)
job() {  # job NAME ARGS...: one benchmark process in the background
  local name=$1; shift
  timeout "$LIMIT" python3 -m benchmarks.adapt "${COMMON[@]}" "$@" \
    --rows "$ROWS/$name.jsonl" >"$ROWS/$name.log" 2>&1 &
}
if [ "${2:-}" = rule ]; then  # four cases, each eight consecutive seeds over four processes
  COMMON=(--frames 8 --test 2 --size 160 --prior-input frame --device cuda --threads 1
          --budget-min 10 --relaxed-prior 0.1 --floor 100)
  if [ -n "${STEPS:-}" ]; then COMMON+=(--steps "$STEPS"); else COMMON+=(--acquisitions 2); fi
  base=4250
  for case in asters:10 honeycomb:10 asters:30 honeycomb:30; do
    fam=${case%:*}; ph=${case#*:}
    for k in 0 2 4 6; do
      job "rule${STEPS:-}-$fam-$ph-$((base + k))" --families "$fam" --photons "$ph" \
        --seed $((base + k))
    done
    base=$((base + 10))
  done
elif [ "${2:-}" = long ]; then  # fewer processes, each one acquisition, up to 3.5 minutes
  COMMON=("${COMMON[@]:0:14}" --budget-min "${BUDGET:-3.5}")
  for fam in asters honeycomb; do
    for seed in 4203 4204 4205; do
      job "long-$fam-10-$seed" --families "$fam" --photons 10 --seed "$seed"
    done
  done
  # the room without the prior: supervised by the truth, nothing holding the initial model
  job ceiling0-asters-10 --families asters --photons 10 --seed 4203 --ceiling --prior 0
  for seed in 4203 4204; do
    job "ceiling0-honeycomb-10-$seed" --families honeycomb --photons 10 --seed "$seed" \
      --ceiling --prior 0
  done
else
  for fam in asters honeycomb; do
    for seed in 4203 4206; do
      job "$fam-10-$seed" --families "$fam" --photons 10 --seed "$seed" --acquisitions 3
      job "$fam-30-$seed" --families "$fam" --photons 30 --seed "$seed" --acquisitions 3
    done
  done
  job real --families "" --real .gpudata/confocal_sted --seed 4203
  job ceiling-honeycomb-10 --families honeycomb --photons 10 --seed 4203 --acquisitions 3 \
    --ceiling
fi
sleep 20; nvidia-smi | tee -a "$OUT/gpu.txt"
# the rows so far into $OUT every 15 s: a call stopped early still brings back what finished
while [ -n "$(jobs -r)" ]; do tar czf "$OUT/rows.tgz" -C "$ROWS" .; sleep 15; done
tar czf "$OUT/rows.tgz" -C "$ROWS" .
for f in "$ROWS"/*.jsonl; do echo "$f $(($(wc -l <"$f") - 1)) rows"; done
tail -n 3 "$ROWS"/*.log
