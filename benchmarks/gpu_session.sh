#!/usr/bin/env bash
# The GPU benchmark session of benchmarks/README.md, in one go, from the repository root on a CUDA machine:
#   bash benchmarks/gpu_session.sh [PART...]     (parts: env generator headline backbones pipeline train; default all)
# Results go to $OUT (default benchmarks/gpu-out/). The pipeline part reads the ImageNet sample images from
# $SAMPLES (default: the data root's data/imagenet-samples, from `lorsp data import imagenet-samples-256.zip`)
# and links them into an ImageFolder layout. A part that fails does not stop the others; the exit status is 1
# if any failed, and the last line names them.
#
# SMOKE=1 DEVICE=cpu runs every part at tiny sizes (batch 4, 32 px, 2 steps) to check the script itself on a
# machine without a GPU (tests/test_bench.py does); BACKBONES overrides the backbone sweep.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/gpu-out}"
DEVICE="${DEVICE:-cuda}"
SAMPLES="${SAMPLES:-data/imagenet-samples}"
BACKBONES="${BACKBONES:-resnet50,vit_b32,vit_b16,swin_b,clip_vit_b32,mobilenetv2}"
if [ "${SMOKE:-0}" = 1 ]; then
    BATCH=4 SIZE=32 STEPS=2 WARMUP=1 SWEEP_STEPS=2 SWEEP_WARMUP=1 GEN_STEPS=1
    TRAIN_BATCH=8 TRAIN_SIZE=32 IMAGES=16 WORKER_COUNTS="0 1"
else
    BATCH=256 SIZE=224 STEPS=20 WARMUP=5 SWEEP_STEPS=15 SWEEP_WARMUP=4 GEN_STEPS=20
    TRAIN_BATCH=64 TRAIN_SIZE=224 IMAGES=1000 WORKER_COUNTS="8 16"
fi
mkdir -p "$OUT"
parts="${*:-env generator headline backbones pipeline train}"

part_env() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/env.txt"
    else
        echo "no nvidia-smi" | tee "$OUT/env.txt"
    fi
    python3 -c "import torch, timm
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__)
try:
    import triton; print('triton', triton.__version__)
except ImportError: print('no triton: backend=auto runs eager')" | tee -a "$OUT/env.txt"
}

part_generator() {  # the prompt generator alone: reference, eager, compile; bf16 autocast then float32
    local dtype
    for dtype in bfloat16:bf16 float32:fp32; do
        python3 benchmarks/generator_variants.py --device "$DEVICE" --batch-size "$BATCH" --image-size "$SIZE" \
            --dtype "${dtype%%:*}" --steps "$GEN_STEPS" --output "$OUT/gpu-generator-${dtype#*:}.json"
    done
}

part_headline() {  # the issue's GPU target: ViT-B/32 at 224, batch 256, bf16
    python3 -m lorsp bench --methods lorsp-reference,lorsp,lorsp-fused,lorsp-compiled,lorvp,lp,lp-cached \
        --backbones vit_b32 --batch-size "$BATCH" --image-size "$SIZE" --device "$DEVICE" --dtype bfloat16 \
        --random-init --steps "$STEPS" --warmup "$WARMUP" --quiet --output "$OUT/gpu-vit_b32-$SIZE.json"
}

part_backbones() {  # the five paper backbones and MobileNetV2
    python3 -m lorsp bench --methods lorsp,lorsp-fused,lorvp,lp,lp-cached --backbones "$BACKBONES" \
        --batch-size "$BATCH" --image-size "$SIZE" --device "$DEVICE" --dtype bfloat16 --random-init \
        --steps "$SWEEP_STEPS" --warmup "$SWEEP_WARMUP" --quiet --output "$OUT/gpu-backbones-$SIZE.json"
}

SAMPLE_FOLDER="${TMPDIR:-/tmp}/lorsp-imagenet-samples"
sample_folder() {  # the sample JPEGs <wnid>_<name>.JPEG linked as $SAMPLE_FOLDER/{train,test}/<wnid>/ (an ImageFolder)
    local f b split
    rm -rf "$SAMPLE_FOLDER"
    shopt -s nullglob
    local images=("$SAMPLES"/*.JPEG)
    if [ "${#images[@]}" = 0 ]; then
        echo "no $SAMPLES/*.JPEG: run 'python -m lorsp data import ../shared/data' (or set SAMPLES)" >&2
        return 1
    fi
    for f in "${images[@]}"; do
        b=$(basename "$f")
        for split in train test; do
            mkdir -p "$SAMPLE_FOLDER/$split/${b%%_*}"; ln -s "$(realpath "$f")" "$SAMPLE_FOLDER/$split/${b%%_*}/$b"
        done
    done
}

part_pipeline() {  # decode-once uint8 bank + resize on the GPU vs the DataLoader, on real JPEGs
    local workers
    sample_folder
    for workers in $WORKER_COUNTS; do
        python3 -m lorsp bench --pipeline "folder:$SAMPLE_FOLDER" --batch-size "$BATCH" --image-size "$SIZE" \
            --device "$DEVICE" --pipeline-images "$IMAGES" --workers "$workers" \
            --output "$OUT/gpu-pipeline-w$workers.json"
    done
}

part_train() {  # the trainer end to end with its defaults: backend "auto" (compiled on CUDA), bf16 autocast on
    # CUDA; synthetic images through the DataLoader, then the sample JPEGs through the decode-once device loader
    sample_folder
    python3 -m lorsp train --dataset synthetic --backbone mobilenetv2 --random-init --method lorsp --epochs 2 \
        --batch-size "$TRAIN_BATCH" --image-size "$TRAIN_SIZE" --train-per-class 32 --test-per-class 8 \
        --device "$DEVICE" --output "${TMPDIR:-/tmp}/lorsp-train-$$" --no-progress 2>&1 \
        | tail -4 | tee "$OUT/gpu-train.txt"
    python3 -m lorsp train --dataset "folder:$SAMPLE_FOLDER" --loader device --backbone mobilenetv2 --random-init \
        --method lorsp --epochs 2 --batch-size "$TRAIN_BATCH" --image-size "$TRAIN_SIZE" --device "$DEVICE" \
        --output "${TMPDIR:-/tmp}/lorsp-train-device-$$" --no-progress 2>&1 | tail -4 | tee -a "$OUT/gpu-train.txt"
    grep -q '"loader": "device"' "${TMPDIR:-/tmp}/lorsp-train-device-$$/record.json"
}

failed=""
for part in $parts; do
    echo "=== $part ($(date -u +%H:%M:%S))"
    if ! declare -F "part_$part" >/dev/null; then
        echo "unknown part $part (expected: env generator headline backbones pipeline train)" >&2
        exit 2
    fi
    ( set -e; "part_$part" )  # not in an || list, where bash would ignore set -e inside
    if [ $? != 0 ]; then echo "=== $part FAILED" >&2; failed="$failed $part"; fi
done
if [ -n "$failed" ]; then
    echo "failed parts:$failed" >&2
    exit 1
fi
echo "=== all parts done ($(date -u +%H:%M:%S))"
