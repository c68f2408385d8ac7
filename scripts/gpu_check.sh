#!/usr/bin/env bash
# Issue 17's GPU check, for the first session with a GPU (about 6-8 minutes on an H200):
#   1. compile the Pallas time-loop kernels and compare them with the scan path at TF32 tolerance
#   2. the benchmark: the training-step table (its lrd column is the default time loop: the kernels
#      on a GPU), the time-loop rows (scan, scan unrolled, kernels, cuDNN; 8 seeds on the kernels),
#      XLA command buffers for the scan, and the probe's cost
# Usage: scripts/gpu_check.sh [--full]   (--full: T = 1000 too, in both steps; about twice as long)
# Write its output into docs/benchmarks.md, section "GPU: the time loop on chip (issue 17)".
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
quick="--quick"
[[ "${1:-}" == "--full" ]] && quick=""
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "== kernels against the scan (TF32 tolerance)"
python scripts/kernel_check.py $quick
check=$?
echo "== benchmark"
python scripts/bench.py $quick --malloc default
bench=$?
echo "kernel_check exit $check, bench exit $bench"
exit $(( check || bench ))
