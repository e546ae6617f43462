#!/usr/bin/env bash
# The worked example of docs/evaluation.md: 1,000 digits from the built-in digits/Skip-DiT, uncached and with
# Skip-Cache N=2 and N=3 (the last over 2 torchrun processes), then FDD (the FID of the digits classifier),
# precision / recall / density / coverage and IS against the real digits, and the sampling time.
#   bash benchmarks/digits_evaluation.sh [OUT_DIR]      (about 5 min on a 2-core CPU)
#   CFG=4 SEEDS=0-99 bash benchmarks/digits_evaluation.sh  (guidance scale, default 1 = none; other seeds)
set -euo pipefail
out=${1:-samples/digits-evaluation}
export OMP_NUM_THREADS=1
S=(--ckpt digits/Skip-DiT --seeds "${SEEDS:-0-999}" --sampler ddim --steps 50 --cfg-scale "${CFG:-1}" --no-progress)
skipdit sample-many "${S[@]}" --out "$out/none"
skipdit sample-many "${S[@]}" --cache skip:N=2 --out "$out/skip-n2"
torchrun --standalone --nproc-per-node 2 -m skipdit sample-many "${S[@]}" --cache skip:N=3 --out "$out/skip-n3"
for run in none skip-n2 skip-n3; do
  echo "== $run"
  skipdit eval fid "$out/$run/samples.npz" digits-real --features digits --no-progress
  skipdit eval prdc "$out/$run/samples.npz" digits-real --features digits --no-progress
  skipdit eval is "$out/$run/samples.npz" --features digits --no-progress
  python -c "import json, sys; s = json.load(open(sys.argv[1])); print('sampling', round(s['seconds_total'], 1), \
's over', s['processes'], 'process(es); ideal speed-up', round(s['stats']['ideal_speedup'], 2))" "$out/$run/summary.json"
done
