#!/usr/bin/env bash
# One device call: the GPU suite (30-step windows, variants, step profiles), the anchor script, the GPU tests.
#
# Run from the repository root on the GPU machine, results under $OUT:
#   mkdir -p .gpuref && cp ../shared/anchors/gpu_reference.py .gpuref/   # an ignored folder the call carries
#   bash benchmarks/gpu_call.sh         # BENCH_S / ANCHOR_S / TESTS_S: time caps; VARIANTS= drops --gpu-variants
# The suite logs each path as it finishes, so a capped run keeps what it measured (bench.log).
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:$PWD
OUT=${OUT:-/tmp/gpu_call}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch,lightning,timm,torchmetrics;print('torch',torch.__version__,'lightning',lightning.__version__,'timm',timm.__version__,'torchmetrics',torchmetrics.__version__)"
  date -u; } > "$OUT/env.txt" 2>&1
ANCHOR=${ANCHOR:-.gpuref/gpu_reference.py}
timeout "${BENCH_S:-300}" python3 -m benchmarks gpu ${VARIANTS---gpu-variants} --gpu-anchor "$ANCHOR" ${BENCH_ARGS:-} --gpu-warmup 10 --gpu-steps 30 \
  --gpu-repeats 3 --out "$OUT/bench" > "$OUT/bench.log" 2>&1
echo "bench rc=$?" >> "$OUT/env.txt"
timeout "${ANCHOR_S:-150}" python3 "$ANCHOR" > "$OUT/anchor.log" 2>&1
echo "anchor rc=$?" >> "$OUT/env.txt"
# every file holding a `gpu`-marked test (collecting the whole suite would need every optional package there);
# the files named in FIRST_TESTS (space-separated) run first, so a capped call still checks them
FIRST=${FIRST_TESTS:-}
CNNLSTM_TEST_GPU=1 timeout "${TESTS_S:-120}" python3 -m pytest -q -m gpu -p no:cacheprovider $FIRST \
  $(grep -rl "mark.gpu" tests --include="test_*.py" | grep -v -F -x -e "${FIRST:-/none}") > "$OUT/gputests.log" 2>&1
echo "tests rc=$?" >> "$OUT/env.txt"
cat "$OUT/env.txt"; grep "^gpu:" "$OUT/bench.log"; tail -n 25 "$OUT/anchor.log"; tail -n 8 "$OUT/gputests.log"
