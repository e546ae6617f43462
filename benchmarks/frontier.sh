#!/usr/bin/env bash
# The issue-17 measurement (docs/benchmarks.md, "The fidelity frontier"): on both pairs of twins, at DDIM-50 and
# DPM-Solver++-20, `skipdit bench` with every method on the evaluation seeds 0-63, plus five schedules of the
# forecasting Skip-Cache taken from the Pareto front that `skipdit cache tune --family taylor --masks` finds on the
# calibration seeds 1000-1007 (disjoint from the evaluation seeds). Run it on an idle machine: the measured
# speed-ups are wall-clock ratios.
#   benchmarks/frontier.sh OUT_DIR [RUN ...]      RUN: deep-ddim50 deep-dpm20 shallow-ddim50 shallow-dpm20 (all)
# Each RUN writes OUT_DIR/RUN/: tune.log (the tune, 20 s to 2 min), then the bench's bench.md, bench.json,
# pareto.png, pareto-macs.png and similarity.png, and OUT_DIR/RUN.log. The bench of deep-ddim50 takes 35 minutes
# on 2 cores, of deep-dpm20 15, of shallow-ddim50 14, of shallow-dpm20 6.
set -euo pipefail
out=${1:?usage: frontier.sh OUT_DIR [RUN ...]}
shift
runs=${*:-deep-ddim50 deep-dpm20 shallow-ddim50 shallow-dpm20}
mkdir -p "$out"

# The schedules picked from each tune's printed front: five points spread over its speed-ups (the tune is
# deterministic, so rerunning it prints the same front).
declare -A picked=(
  [deep-ddim50]="taylor:N=2,b=3,stop=50,order=2,taylor:N=3,start=900,order=1,\
taylor:order=2,mask=FCRCRFCRCRFCRCFCRCFCRCFCRCFCRFCRFCRFCRFCRFCFCFCFCF,\
taylor:order=1,mask=FCRCRFCRCRFCRCRFCRCFCRCFCRCFCRCFCRCFCRCFCRFCRFCRFC,\
taylor:order=2,mask=FCCCCCCCFCCCCCCFCCCCCCFCCCCCFCCCCCFCCCCFCCCCFCCCFC"
  [deep-dpm20]="taylor:N=2,b=2,order=1,taylor:N=3,b=2,order=1,taylor:b=2,order=1,mask=FCRFCRFCRCFCRCFCRCFC,\
taylor:b=2,order=1,mask=FCRCRFCRCRFCRCFCRCFC,taylor:order=1,mask=FCRCRFCRCFCRCFCRCFCR"
  [shallow-ddim50]="taylor:N=3,start=900,stop=50,order=2,\
taylor:order=2,mask=FCRCFCRCFCRCFCRCFCRFCRFCRFCRFCRFCRFCRFCFCFCFCFCFCF,\
taylor:order=1,mask=FCRFCRFCRFCRFCRFCRFCRFCRFCRFCRFCRFCRFCRFCRFCRFCRFC,\
taylor:order=1,mask=FCRCRCRFCRCRCFCRCRCFCRCRFCRCRFCRCFCRCFCRFCRFCRFCFC,\
taylor:order=2,mask=FCRCRCRFCRCRCRFCRCRCFCRCRCFCRCRCFCRCRCFCRCRFCRCRFC"
  [shallow-dpm20]="taylor:N=2,order=2,taylor:order=1,mask=FCCCFCCCFCCFCCFCCFCF,taylor:order=0,mask=FCRFCRFCRFCRFCRFCRFC,\
taylor:order=0,mask=FCRCRCFCRCRFCRCFCRFC,taylor:order=0,mask=FCRCRCRFCRCRCFCRCRFC"
)

for run in $runs; do
  case $run in
    deep-*) models=(--model digits-deep/Skip-DiT --baseline-model digits-deep/DiT) ;;
    shallow-*) models=(--model digits/Skip-DiT --baseline-model digits/DiT) ;;
    *) echo "frontier.sh: unknown run $run" >&2; exit 2 ;;
  esac
  case $run in
    *-ddim50) sampling=(--sampler ddim --steps 50) ;;
    *-dpm20) sampling=(--sampler dpm++2m --steps 20) ;;
  esac
  mkdir -p "$out/$run"
  skipdit cache tune --model "${models[1]}" "${sampling[@]}" --cfg-scale 4 --family taylor --masks \
    --target-speedup 1.5 --tolerance 0 --select spread --max-candidates 150 --no-progress > "$out/$run/tune.log"
  skipdit bench "${models[@]}" "${sampling[@]}" --caches "all,${picked[$run]}" --seeds 0-63 --repeats 3 --flops \
    --no-progress --out "$out/$run" > "$out/$run.log" 2>&1
  echo "$run: $(grep -c '^|' "$out/$run/bench.md") table lines"
done
