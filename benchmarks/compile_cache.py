"""What compiling LoRSP's LIF gate costs on this machine, first with an empty cache and then again in a new
process with the cache the first one left, against what it saves per training step; the break-even run lengths
behind ``CPU_COMPILE_MIN_STEPS``. On a CPU the compiled gate is a pair of AOTInductor packages
(``lorsp.prompters.aot``): the first process builds them, the second loads them.

    python benchmarks/compile_cache.py --batch-size 32 --image-size 128 --output benchmarks/cpu-compile-cache-128.json

Each measurement runs in its own process (``--child``): the first step of the prompter with ``backend="compile"``
(forward + backward: tracing, compiling or loading the two kernels, and the step itself), then ``--steps``
timed steps of each backend, alternating (the prompt generator alone, forward + backward).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(batch: int, size: int, steps: int) -> dict:
    import torch

    from lorsp.prompters import build_prompter

    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size)
    prompters = {b: build_prompter("lorsp", image_size=size, backend=b) for b in ("eager", "compile")}
    for p in prompters.values():
        torch.nn.init.normal_(p.factors.basis, std=0.01)

    def step(backend):
        prompters[backend].zero_grad(set_to_none=True)
        prompters[backend].prompt(x).sum().backward()

    start = time.perf_counter()
    step("compile")
    first = time.perf_counter() - start
    step("eager")
    times = {"eager": [], "compile": []}
    for i in range(steps):
        for backend in (("eager", "compile") if i % 2 == 0 else ("compile", "eager")):
            start = time.perf_counter()
            step(backend)
            times[backend].append(time.perf_counter() - start)
    return {"first_compiled_step_s": first, **{f"{b}_step_ms": statistics.median(t) * 1e3 for b, t in times.items()}}


def _run_child(cache: str, args) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, LORSP_AOT_CACHE=os.path.join(cache, "aot"),
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, __file__, "--child", "--batch-size", str(args.batch_size), "--image-size",
                          str(args.image_size), "--steps", str(args.steps)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _commit() -> str | None:
    from lorsp.results import git_commit
    return git_commit(ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--output", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.batch_size, args.image_size, args.steps)))
        return 0
    with tempfile.TemporaryDirectory(prefix="lorsp-inductor-") as cache:
        cold = _run_child(cache, args)
        cached = _run_child(cache, args)
    saved_ms = statistics.median([cold["eager_step_ms"] - cold["compile_step_ms"],
                                  cached["eager_step_ms"] - cached["compile_step_ms"]])
    compile_ms = {k: r["first_compiled_step_s"] * 1e3 - r["compile_step_ms"] for k, r in
                  (("cold", cold), ("cached", cached))}
    result = {"batch_size": args.batch_size, "image_size": args.image_size, "steps": args.steps,
              "cold": cold, "cached": cached, "saved_ms_per_step": saved_ms,
              "break_even_steps_cold": compile_ms["cold"] / saved_ms if saved_ms > 0 else None,
              "break_even_steps_cached": compile_ms["cached"] / saved_ms if saved_ms > 0 else None,
              "meta": {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "loadavg": list(os.getloadavg()), "cpu_count": os.cpu_count(),
                       "git_commit": _commit(), "compiled_on_cpu": "AOTInductor packages (lorsp.prompters.aot)"}}
    print(json.dumps(result, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
