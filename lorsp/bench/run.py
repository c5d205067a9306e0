"""The benchmark: every configuration interleaved, round by round, in one process (:func:`run_bench`), and the
machine it ran on (:func:`bench_meta`)."""
from __future__ import annotations

import os
import platform
import sys
import time

import torch

from .configs import DEFAULT_METHODS, build_model, method_prompter, Configuration, bench_backbone
from .measure import (parse_ints, paired_ratios, peak_memory_mb, quartiles, resolve_device, resolve_dtype, parse_list,
                      timed)

ROW_KEYS = ("method", "backbone", "device", "batch_size", "image_size", "step_ms", "step_ms_iqr", "floor_ms",
            "ratio_to_floor", "prompt_ms", "images_per_s", "peak_mem_mb")


def bench_meta(device) -> dict:
    """What ran the benchmark: CPU model and cores, GPU name, versions."""
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    meta = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": str(device), "gpu": None,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import timm
        meta["timm"] = timm.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
        meta["cuda"] = torch.version.cuda
    try:
        meta["loadavg_before"] = list(os.getloadavg())
    except OSError:
        pass
    return meta


def run_bench(methods=DEFAULT_METHODS, backbones=("mobilenetv2",),
              batch_size=32, image_size=128, device="cpu", steps=10, warmup=3, random_init=False,
              dtype="auto", num_classes=10, prompter_kwargs=None, data_root=None, seed=0,
              progress: bool = False, run_steps: int | None = None) -> list[dict]:
    """Benchmark ``methods`` × ``backbones`` × ``batch_size`` × ``image_size`` (each a value or a list) on
    ``device``; returns one row dict per configuration (see the module docstring for the keys).

    ``random_init``: random backbone weights (else real ones when the data root or timm's cache has them,
    falling back to random weights with a note in the row). ``dtype``: autocast dtype (``auto`` = bf16 on
    CUDA, float32 on CPU). ``prompter_kwargs``: ``{method: {kwarg: value}}`` for the prompters. ``run_steps``:
    the run length the prompters are told (``plan_run``; default ``warmup + steps``, what the bench runs), on
    which LoRSP's ``backend="auto"`` depends on a CPU (it builds the compiled gate for long runs, and uses it
    whenever it is built).
    """
    methods = parse_list(methods)
    if not methods:
        raise ValueError("methods is empty; give e.g. methods=['lorsp', 'lorvp']")
    backbones = parse_list(backbones)
    if not backbones:
        raise ValueError("backbones is empty; give e.g. backbones=['mobilenetv2']")
    batch_sizes, image_sizes = parse_ints(batch_size), parse_ints(image_size)
    steps, warmup = int(steps), int(warmup)
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    if run_steps is not None and (isinstance(run_steps, bool) or not isinstance(run_steps, int) or run_steps < 1):
        raise ValueError(f"run_steps must be None or an integer >= 1, got {run_steps!r}")
    run_steps = warmup + steps if run_steps is None else run_steps
    device = resolve_device(device)
    amp_dtype = resolve_dtype(dtype, device)
    prompter_kwargs = dict(prompter_kwargs or {})
    channels_last = device.type == "cuda"
    rows = []
    for backbone_name in backbones:
        for size in image_sizes:
            backbone, info, weights_note = bench_backbone(backbone_name, size, random_init, data_root)
            backbone = backbone.to(device)
            if channels_last:
                backbone = backbone.to(memory_format=torch.channels_last)
            for batch in batch_sizes:
                rows.extend(_bench_one(methods, backbone, info, weights_note, batch, size, device, amp_dtype,
                                       steps, warmup, num_classes, prompter_kwargs, seed, channels_last,
                                       progress, run_steps))
    return rows


def _bench_one(methods, backbone, info, weights_note, batch, size, device, amp_dtype, steps, warmup,
               num_classes, prompter_kwargs, seed, channels_last, progress, run_steps) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=generator).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), generator=generator).to(device)
    floor = Configuration("floor", build_model(backbone, info, None, num_classes).to(device), None, x, y, device,
                    amp_dtype, {}, channels_last)
    configs = [floor]
    for method in methods:
        torch.manual_seed(seed)
        prompter, prompter_source = method_prompter(method, size, prompter_kwargs)
        if callable(getattr(prompter, "plan_run", None)):
            prompter.plan_run(run_steps)  # as the trainer does for a run of that length
        model = build_model(backbone, info, prompter, num_classes).to(device)
        configs.append(Configuration(method, model, prompter, x, y, device, amp_dtype,
                               {"prompter": prompter_source, "model": "lorsp.model.PromptedModel"}, channels_last))
    for round_index in range(warmup + steps):
        for config in configs:
            seconds = timed(config.step, device)
            if round_index >= warmup:
                config.times.append(seconds)
            if config.prompter is not None:
                seconds = timed(config.prompt_step, device)
                if round_index >= warmup:
                    config.prompt_times.append(seconds)
        if progress:
            print(f"  round {round_index + 1}/{warmup + steps}", file=sys.stderr, flush=True)
    peak = {id(c): peak_memory_mb(c.step, device) for c in configs}
    saved = {id(c): c.saved_mb() for c in configs}
    q1, floor_ms, q3 = (v * 1e3 for v in quartiles(floor.times))
    floor_row_extra = {"floor_ms_iqr": q3 - q1, "floor_peak_mem_mb": peak[id(floor)], "floor_saved_mb": saved[id(floor)]}
    rows = []
    lp_ms = None
    for config in configs[1:]:
        q1, step_ms, q3 = (v * 1e3 for v in quartiles(config.times))
        prompt_ms = prompt_iqr = None
        if config.prompt_times:
            p1, prompt_ms, p3 = (v * 1e3 for v in quartiles(config.prompt_times))
            prompt_iqr = p3 - p1
        prompter = config.prompter
        row = {
            "method": config.method, "backbone": info.name, "device": str(device), "batch_size": batch,
            "image_size": size, "step_ms": step_ms, "step_ms_iqr": q3 - q1, "floor_ms": floor_ms,
            "ratio_to_floor": step_ms / floor_ms, "prompt_ms": prompt_ms, "prompt_ms_iqr": prompt_iqr,
            "images_per_s": batch / (step_ms / 1e3), "peak_mem_mb": peak[id(config)],
            "saved_mb": saved[id(config)], "dtype": str(amp_dtype or torch.float32).replace("torch.", ""),
            "steps": steps, "warmup": warmup, "timm_name": info.timm_name, "weights_source": info.weights_source,
            "weights_note": weights_note,
            "prompt_params": prompter.num_prompt_params() if prompter is not None and hasattr(
                prompter, "num_prompt_params") else 0,
            "channels_last": channels_last, **config.sources, **floor_row_extra,
            "run_steps": getattr(prompter, "planned_steps", None),
            "lif_backend": prompter.lif_backend(device) if callable(getattr(prompter, "lif_backend", None)) else None,
        }
        if config.method == "lp":
            lp_ms = step_ms
        rows.append(row)
    lorvp_config = next((c for c in configs[1:] if c.method == "lorvp"), None)
    for config, row in zip(configs[1:], rows):  # per-round ratios: load drifts hit both sides of each pair
        row["ratio_to_floor_paired"], row["ratio_to_floor_paired_ci95"] = paired_ratios(config.times, floor.times)
        row["ratio_to_lorvp_paired"], row["ratio_to_lorvp_paired_ci95"] = (
            paired_ratios(config.times, lorvp_config.times) if lorvp_config is not None else (None, None))
        row["round_ms"] = [round(t * 1e3, 4) for t in config.times]  # step r of every row ran in round r
        row["floor_round_ms"] = [round(t * 1e3, 4) for t in floor.times]
    for row in rows:
        if row["method"] == "lp-cached":
            row["lp_uncached_step_ms"] = lp_ms
            row["speedup_vs_lp"] = (lp_ms / row["step_ms"]) if lp_ms else None
    _add_relative(rows)
    return rows


def _add_relative(rows: list[dict]) -> None:
    """``ratio_to_lorvp`` for every prompt method (LoR-VP measured in the same run)."""
    lorvp = next((r for r in rows if r["method"] == "lorvp"), None)
    for row in rows:
        row["ratio_to_lorvp"] = (row["step_ms"] / lorvp["step_ms"]) if lorvp else None
