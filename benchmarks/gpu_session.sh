#!/usr/bin/env bash
# The GPU throughput measurements (benchmarks/gpu_throughput.py and its variants) in one call,
# for a lent GPU machine whose image has PyTorch but not this project's smaller dependencies (carried as wheels in .whl/: pytorch-ranger,
# pytorch-optimizer, pytorch-metric-learning). Logs and profiles go to $OUT (default
# benchmarks/out/gpu_session). Each variant has its own time limit, so one that hangs or fails
# leaves the others' numbers; the most important run first.
#
#     bash benchmarks/gpu_session.sh [all|batches|scale|smoke|check|wholestep|compile|versus|graphs|groups]   # on the GPU machine, from the repository root; all: the defaults (profiled), batch 256, compiled; runs named "default" use the recipe as it is (cuda_graphs on since 2026-11-26), "eager" adds --eager
#     PREV=dir bash benchmarks/gpu_session.sh versus   # this code against an earlier copy of the package (dir/ablate), same machine
set -u
OUT=${OUT:-benchmarks/out/gpu_session}
mkdir -p "$OUT" /tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 ABLATE_HOME=${ABLATE_HOME:-/tmp/ablate_home}
nvidia-smi --query-gpu=name,memory.total,utilization.gpu,clocks.sm --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cores', __import__('os').cpu_count())"

run() {  # label, seconds, benchmark arguments...
  local label=$1 limit=$2
  shift 2
  echo "== $label"
  timeout "$limit" python3 benchmarks/gpu_throughput.py "$@" >"$OUT/$label.log" 2>&1
  echo "exit $?"
  tail -n 2 "$OUT/$label.log"
}
whole() {  # the whole-step prototype at the recipe's batch and at 256, frames 64
  for b in 64 256; do
    echo "== whole_step_$b"
    timeout 90 python3 benchmarks/gpu_whole_step.py --batch "$b" >"$OUT/whole_step_$b.log" 2>&1
    echo "exit $?"
    tail -n 1 "$OUT/whole_step_$b.log"
  done
}
case "${1:-all}" in
  all)
    run default 140 --profile 40 --out "$OUT/prof_default"
    run batch256 100 --batch 256
    run compile 200 --compile --profile 40 --out "$OUT/prof_compile" ;;
  batches)  # the defaults at the recipe's batch size and at 128 and 256
    run default 100
    run batch128 90 --batch 128
    run batch256 90 --batch 256 ;;
  scale)  # the full-size synthetic set written straight into a cache, then 2 baseline-recipe epochs on it
    python3 -m ablate data synth --out /tmp/full --signs 250 --participants 21 --reps 18 --cache-only \
      --workers "$(nproc)" >"$OUT/synth.log" 2>&1
    tail -n 1 "$OUT/synth.log"
    echo "== scale_full"
    timeout 200 python3 benchmarks/scale_epoch.py --data /tmp/full --preset full --epochs 2 >"$OUT/scale_full.log" 2>&1
    echo "exit $?"
    tail -n 2 "$OUT/scale_full.log" ;;
  smoke)  # the CUDA-only training paths once (benchmarks/gpu_smoke.py), the whole-step prototype, then the defaults
    echo "== smoke"
    timeout 200 python3 benchmarks/gpu_smoke.py >"$OUT/smoke.log" 2>&1
    echo "exit $?"
    grep -h '"model"\|"error"' "$OUT/smoke.log"
    tail -n 2 "$OUT/smoke.log"
    whole
    run default 110 ;;
  check)  # the CUDA-only training paths alone (benchmarks/gpu_smoke.py), every JSON line it printed
    echo "== smoke"
    timeout 200 python3 benchmarks/gpu_smoke.py >"$OUT/smoke.log" 2>&1
    echo "exit $?"
    grep -h '^{' "$OUT/smoke.log" | cut -c1-400 ;;
  wholestep)  # benchmarks/gpu_whole_step.py: a training step captured whole, at 64 and 256
    whole ;;
  versus)  # the smoke run, then this code and the copy in $PREV alternating, at 64 and 256, then the whole-step prototype at 64
    : "${PREV:?set PREV to a folder holding an earlier copy of the package (PREV/ablate)}"
    echo "== smoke"
    timeout 200 python3 benchmarks/gpu_smoke.py >"$OUT/smoke.log" 2>&1
    echo "exit $?"
    grep -h '^{' "$OUT/smoke.log" | cut -c1-400
    for round in 1 2; do
      run "default_$round" $((round == 1 ? 100 : 60))  # the first also writes the synthetic set (30 s on an H100 machine)
      PYTHONPATH=$PREV:/tmp/site run "prev_$round" 60
    done
    run batch256 60 --batch 256
    PYTHONPATH=$PREV:/tmp/site run batch256_prev 60 --batch 256
    echo "== whole_step_64"
    timeout 60 python3 benchmarks/gpu_whole_step.py --batch 64 >"$OUT/whole_step_64.log" 2>&1
    echo "exit $?"
    tail -n 1 "$OUT/whole_step_64.log" ;;
  graphs)  # the defaults (cuda_graphs on, 1,024 items at a time) against eager with 256 at a time (the defaults before)
    run default_1 130  # also writes the synthetic set (30 s on an H100 machine)
    run eager_1 80 --eager --group 256
    run default_2 80
    run eager_2 80 --eager --group 256 ;;
  groups)  # the smoke run, then the input path making 1,024, 256 and 512 items at a time (cuda_graphs on)
    echo "== smoke"
    timeout 200 python3 benchmarks/gpu_smoke.py >"$OUT/smoke.log" 2>&1
    echo "exit $?"
    grep -h '"model"' "$OUT/smoke.log"
    tail -n 4 "$OUT/smoke.log"
    run graphs_g1024 130 --group 1024  # also writes the synthetic set
    run graphs_g256 80 --group 256
    run graphs_g512 80 --group 512 ;;
  compile)  # the eager reference again, then the compiled variants
    run default 90
    run compile 200 --compile --profile 40 --out "$OUT/prof_compile"
    run compile_lookahead 130 --compile --optimizer lookahead ;;
  *)
    echo "unknown mode '$1': expected all, batches, scale, smoke, check, wholestep, compile, versus, graphs or groups" >&2
    exit 2 ;;
esac
