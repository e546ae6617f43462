#!/usr/bin/env bash
# The issue-16 tables: `skipdit bench` with every cache, Skip-Cache on digits/Skip-DiT and the peers on digits/DiT,
# on the multistep and sigma-space samplers at 10, 20 and 50 steps (64 seeds, guidance 4). One folder per run:
#   benchmarks/sampler_bench.sh OUT_DIR [SAMPLERS] [STEPS]
# e.g. benchmarks/sampler_bench.sh bench-samplers "dpm++2m unipc euler" "10 20 50"
set -euo pipefail
out=${1:?usage: sampler_bench.sh OUT_DIR [SAMPLERS] [STEPS]}
samplers=${2:-"dpm++2m unipc euler"}
steps=${3:-"10 20 50"}
for sampler in $samplers; do
  for n in $steps; do
    skipdit bench --model digits/Skip-DiT --baseline-model digits/DiT --caches all --seeds 0-63 --repeats 2 \
      --sampler "$sampler" --steps "$n" --out "$out/$sampler-$n" --no-progress > "$out/$sampler-$n.log" 2>&1
    echo "$sampler $n: $(grep -c '^|' "$out/$sampler-$n/bench.md") table lines"
  done
done
