"""LoRSP's prompt generator alone (Eqs. 4–9, forward + backward), one variant at a time, on one device.

Checks each fused variant against the reference autograd path (δ and the gradients of P and B, relative
error) on fresh random inputs, then times forward and backward separately (CUDA events via synchronize,
median of ``--steps``). Variants: ``reference`` (autograd through the LIF, ``fused=False``), ``eager`` and
``compile`` (the fused gate's two backends, ``LoRSPPrompter(backend=...)``).

    python benchmarks/generator_variants.py --device cuda --batch-size 256 --image-size 224 --output gen.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lorsp.prompters.lowrank_sparse import LoRSPPrompter


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run(prompter, variant, x, amp_dtype):
    if variant == "reference":
        prompter.fused = False
    else:
        prompter.fused = True
        prompter.backend = variant
    for p in prompter.parameters():
        p.grad = None
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        delta = prompter.prompt(x)
    return delta


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", default="reference,eager,compile")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    amp_dtype = None if args.dtype == "float32" else torch.bfloat16
    torch.manual_seed(0)
    prompter = LoRSPPrompter(image_size=args.image_size, groups=args.groups, rank=args.rank).to(device)
    with torch.no_grad():  # trained-like factors: spikes on and off
        prompter.factors.basis.normal_(0, 0.5)
        prompter.factors.projection.normal_(0, 0.05)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    x = torch.rand(shape, device=device)
    grad = torch.randn(shape, device=device)
    params = (prompter.factors.projection, prompter.factors.basis)

    # correctness on a small fresh batch, float32, against the reference
    xs, gs = torch.rand(4, *shape[1:], device=device), torch.randn(4, *shape[1:], device=device)
    expected = None
    rows = []
    for variant in args.variants.split(","):
        delta = _run(prompter, variant, xs, None)
        delta.backward(gs)
        got = [delta.detach()] + [p.grad.detach().clone() for p in params]
        if expected is None:
            expected = got
        errors = [((g - e).norm() / e.norm().clamp_min(1e-30)).item() for g, e in zip(got, expected)]
        # timing at full size
        fwd, bwd = [], []
        for step in range(args.steps + 3):
            _sync(device)
            t0 = time.perf_counter()
            delta = _run(prompter, variant, x, amp_dtype)
            _sync(device)
            t1 = time.perf_counter()
            delta.backward(grad.to(delta.dtype))
            _sync(device)
            t2 = time.perf_counter()
            if step >= 3:
                fwd.append((t1 - t0) * 1e3)
                bwd.append((t2 - t1) * 1e3)
        peak = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            delta = _run(prompter, variant, x, amp_dtype)
            delta.backward(grad.to(delta.dtype))
            _sync(device)
            peak = (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
            del delta
        row = {"variant": variant, "forward_ms": statistics.median(fwd), "backward_ms": statistics.median(bwd),
               "total_ms": statistics.median(f + b for f, b in zip(fwd, bwd)), "peak_mb": peak,
               "rel_err_delta": errors[0], "rel_err_grad_projection": errors[1], "rel_err_grad_basis": errors[2],
               "batch_size": args.batch_size, "image_size": args.image_size, "dtype": args.dtype,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        rows.append(row)
        print(f"{variant:16s} fwd {row['forward_ms']:8.3f} ms  bwd {row['backward_ms']:8.3f} ms  "
              f"peak {peak if peak is None else round(peak)} MB  rel.err δ {errors[0]:.1e} "
              f"∂P {errors[1]:.1e} ∂B {errors[2]:.1e}", flush=True)
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
