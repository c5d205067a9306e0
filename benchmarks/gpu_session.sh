#!/usr/bin/env bash
# The GPU benchmark session of benchmarks/README.md, in one go, from the repository root on a CUDA machine:
#   bash benchmarks/gpu_session.sh [PART...]     (parts: env generator headline backbones pipeline train; default all)
# Results go to $OUT (default benchmarks/gpu-out/). The pipeline part reads the ImageNet sample images from
# the data root (`lorsp data import imagenet-samples-256.zip`) and links them into an ImageFolder layout.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/gpu-out}"
mkdir -p "$OUT"
parts="${*:-env generator headline backbones pipeline train}"
BACKBONES="${BACKBONES:-resnet50,vit_b32,vit_b16,swin_b,clip_vit_b32,mobilenetv2}"

for part in $parts; do
    echo "=== $part ($(date -u +%H:%M:%S))"
    case "$part" in
    env)
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/env.txt"
        python3 -c "import torch, timm, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'timm', timm.__version__, 'triton', triton.__version__)" | tee -a "$OUT/env.txt" ;;
    generator)  # the prompt generator alone: reference, eager, compile; bf16 autocast then float32
        python3 benchmarks/generator_variants.py --device cuda --batch-size 256 --image-size 224 --dtype bfloat16 \
            --output "$OUT/gpu-generator-bf16.json"
        python3 benchmarks/generator_variants.py --device cuda --batch-size 256 --image-size 224 --dtype float32 \
            --output "$OUT/gpu-generator-fp32.json" ;;
    headline)  # the issue's GPU target: ViT-B/32 at 224, batch 256, bf16
        python3 -m lorsp bench --methods lorsp-reference,lorsp,lorsp-fused,lorsp-compiled,lorvp,lp,lp-cached \
            --backbones vit_b32 --batch-size 256 --image-size 224 --device cuda --dtype bfloat16 --random-init \
            --steps 20 --warmup 5 --quiet --output "$OUT/gpu-vit_b32-224.json" ;;
    backbones)  # the five paper backbones and MobileNetV2
        python3 -m lorsp bench --methods lorsp,lorsp-fused,lorvp,lp,lp-cached --backbones "$BACKBONES" \
            --batch-size 256 --image-size 224 --device cuda --dtype bfloat16 --random-init --steps 15 --warmup 4 \
            --quiet --output "$OUT/gpu-backbones-224.json" ;;
    pipeline)  # decode-once uint8 bank + resize on the GPU vs the DataLoader, on real JPEGs
        folder=/tmp/lorsp-imagenet-samples
        rm -rf "$folder"
        for f in data/imagenet-samples/*.JPEG; do
            b=$(basename "$f"); mkdir -p "$folder/train/${b%%_*}"; ln -s "$PWD/$f" "$folder/train/${b%%_*}/$b"
        done
        for workers in 8 16; do
            python3 -m lorsp bench --pipeline "folder:$folder" --batch-size 256 --image-size 224 --device cuda \
                --pipeline-images 1000 --workers "$workers" --output "$OUT/gpu-pipeline-w$workers.json" | tail -4
        done ;;
    train)  # the default backend ("auto": compiled on CUDA) through the trainer, bf16 autocast
        python3 -m lorsp train --dataset synthetic --backbone mobilenetv2 --random-init --method lorsp --epochs 2 \
            --batch-size 64 --image-size 224 --train-per-class 32 --test-per-class 8 --device cuda \
            --output /tmp/lorsp-train --no-progress 2>&1 | tail -4 | tee "$OUT/gpu-train.txt" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
    esac
done
