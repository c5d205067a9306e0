#!/usr/bin/env bash
# The GPU-window plan (lorsp.gpu_window; benchmarks/README.md, "For a task that has a GPU"), as it is, from the
# repository root of a CUDA machine with no network:
#   bash benchmarks/gpu_window.sh
# It checks the GPU and the pack (sha256 of every file, the MobileNetV2 weights: no hub fallback), times every
# method's step on the device, prints the expected minutes of each block, then trains the plan's runs in order of
# importance (Tables II/V on CIFAR-10 × 3 seeds first) until the time budget would be passed, writing each run's
# record the moment it ends. Run it again (another window) and it continues where it stopped.
#
# Knobs (environment):
#   PACK     the pack folder, made beforehand where the data are: `lorsp data pack .carry/window-pack`
#            (default .carry/window-pack, a git-ignored folder that the device tool can carry)
#   MINUTES  time budget from this script's start (default 9: one 10-minute command with room to finish)
#   RESULTS  results folder, one folder per run (default results/mini-window; smoke: runs/mini-window-smoke)
#   OUT      where the summary, the log and a .tar.gz of every finished record go (default benchmarks/gpu-out/window)
#   DEVICE   default cuda; SMOKE=1 DEVICE=cpu runs the same plan at tiny sizes (64 px, 1 epoch; tests do so)
#   BLOCKS   comma-separated blocks to run (default all, in order: table2-cifar10, table2-tiny-imagenet, ood,
#            sparsifiers, hyperparameters, downstream, gallery)
set -uo pipefail
started=$(date +%s)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PACK="${PACK:-.carry/window-pack}"
MINUTES="${MINUTES:-9}"
DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-benchmarks/gpu-out/window}"
smoke=()
if [ "${SMOKE:-0}" = 1 ]; then
    smoke=(--smoke)
    RESULTS="${RESULTS:-runs/mini-window-smoke}"
else
    RESULTS="${RESULTS:-results/mini-window}"
fi
mkdir -p "$OUT"
{
    echo "=== gpu-window $(date -u +%FT%TZ): pack $PACK, device $DEVICE, budget $MINUTES min, results $RESULTS"
    if [ "${DEVICE%%:*}" = cuda ]; then
        if ! command -v nvidia-smi >/dev/null || ! nvidia-smi --query-gpu=name,memory.total,driver_version \
                --format=csv; then
            echo "gpu-window: no GPU here (nvidia-smi failed); for a CPU smoke run set SMOKE=1 DEVICE=cpu" >&2
            exit 2
        fi
    fi
    python3 -c "import torch, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__)"
    python3 -m lorsp gpu-window run --pack "$PACK" --out "$RESULTS" --minutes "$MINUTES" --started "$started" \
        --device "$DEVICE" --bundle "$OUT/mini-window-records.tar.gz" --summary "$OUT/summary.json" \
        ${BLOCKS:+--blocks "$BLOCKS"} "${smoke[@]}"
} 2>&1 | tee "$OUT/window.log"
status=${PIPESTATUS[0]}
echo "=== gpu-window exit $status after $(( $(date +%s) - started )) s; records in $RESULTS, summary in $OUT"
exit "$status"
