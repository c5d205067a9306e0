"""``lorsp bench``: training-step cost of the prompt methods against the frozen backbone's floor.

For each backbone the *floor* is the cheapest step any input-level prompt can have: the frozen backbone's
forward on the normalised image plus the backward to the input (``x.requires_grad_()``), no prompt, no head.
The backbone is built as the trainer builds it (:func:`lorsp.backbones.fold_frozen_backbone`: batch norms
folded, "same" padding fixed for the image size), so the floor and every step use the same backbone.
Each method's step is a full training step of :class:`lorsp.model.PromptedModel` (prompt → normalise → frozen
backbone in eval mode → linear head): forward, cross-entropy, backward to the prompt and head parameters, SGD
step (momentum 0.9, method.md).

Methods (``--methods``): any registered prompter (``lorsp``, ``lorvp``, ``lpf``, …; ``lorsp`` is the
prompter's default: fused, ``backend="auto"``, i.e. compiled on CUDA, and on a CPU compiled when the compiled
gate of this shape is already built (``compiled_gate_cached``) or for runs planned to take at least
``CPU_COMPILE_MIN_STEPS`` steps, else eager: the bench tells the prompters its own length,
``warmup + steps``, or ``--run-steps N`` to stand for a run of N steps; each row says its ``lif_backend``);
``lorsp-reference``
(LoRSP with ``fused=False``: autograd through every LIF step); ``lorsp-fused`` (``backend="eager"``: the fused
G-step LIF recomputed in backward, as PyTorch operations, :func:`lorsp.prompters.fused.fused_lorsp_prompt`);
``lorsp-compiled`` (``backend="compile"``: inductor fuses the loop; built or loaded during warm-up, so give
it ``--warmup`` >= 2); ``lp`` (no prompt: the backbone's forward without gradients each step, then the head);
``lp-cached`` (the head on precomputed features, the same batches; its speed-up over ``lp`` is the epoch-time
ratio of Sec. "LP with cached features").

Measurements, all in one process with the configurations *interleaved* (round r times step r of every
configuration in turn, so machine load hits them alike): ``warmup`` untimed rounds, then ``steps`` timed rounds;
the median step time and its inter-quartile range (IQR). On CUDA every step is bracketed by
``torch.cuda.synchronize()``. Also per configuration:

- ``prompt_ms``: the prompt generator alone, forward + backward (median over the same rounds);
- ``peak_mem_mb``: CUDA: ``torch.cuda.max_memory_allocated`` over one step minus the memory allocated before
  it; CPU (Linux): the peak resident set size over one step (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs``) minus the resident size before it; ``None`` where neither is available;
- ``ratio_to_floor_paired`` / ``ratio_to_lorvp_paired``: the median over rounds of the ratio within a round
  (robust to load that drifts between rounds), with a distribution-free 95% interval for that median
  (``…_ci95``, :func:`median_ci`); ``ratio_to_floor`` / ``ratio_to_lorvp`` divide the medians;
- ``round_ms`` / ``floor_round_ms``: every timed step, in round order, so any other statistic can be recomputed;
- ``saved_mb``: bytes autograd keeps for backward during the forward (device-independent, parameters not
  counted), from :class:`lorsp.prompters.fused.SavedTensorMeter`.

Rows (one per method × backbone × batch size × image size × device) are dicts with at least ``method,
backbone, device, batch_size, image_size, step_ms, step_ms_iqr, floor_ms, ratio_to_floor, prompt_ms,
images_per_s, peak_mem_mb``; ``--output FILE`` writes ``{"meta": …, "rows": […]}`` as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["run_bench", "add_arguments", "main", "format_table", "bench_meta", "median_ci", "ROW_KEYS",
           "DESCRIPTION", "EPILOG"]

ROW_KEYS = ("method", "backbone", "device", "batch_size", "image_size", "step_ms", "step_ms_iqr", "floor_ms",
            "ratio_to_floor", "prompt_ms", "images_per_s", "peak_mem_mb")
SPECIAL_METHODS = ("lp", "lp-cached", "lorsp-fused", "lorsp-compiled", "lorsp-reference")
DEFAULT_METHODS = ("lorsp-reference", "lorsp", "lorsp-fused", "lorsp-compiled", "lorvp", "lp", "lp-cached")

DESCRIPTION = ("Time training steps of prompt methods against the backbone's floor (its forward plus the "
               "backward to the input), interleaved in one process, and print the ratios method/floor and "
               "LoRSP/LoR-VP.")
EPILOG = """examples:
  lorsp bench --methods lorsp-reference,lorsp,lorsp-compiled,lorvp,lp,lp-cached --backbones mobilenetv2 \\
      --batch-size 32 --image-size 128 --device cpu --output benchmarks/cpu-mobilenetv2-128.json
  lorsp bench --methods lorsp,lorsp-fused,lorvp --backbones vit_b32 --batch-size 256 --image-size 224 \\
      --device cuda --dtype bfloat16 --random-init --output benchmarks/gpu-vit_b32-224.json
  lorsp bench --pipeline cifar10 --batch-size 256 --image-size 224 --device cuda
"""


# ---------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------
def _split(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [str(v).strip() for v in value if str(v).strip()]


def _ints(value) -> list[int]:
    out = []
    for item in _split(value) if isinstance(value, str) else (value if isinstance(value, (list, tuple)) else [value]):
        try:
            number = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"expected positive integers, got {item!r}") from None
        if number < 1:
            raise ValueError(f"expected positive integers, got {number}")
        out.append(number)
    return out


def _resolve_device(device) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} asked for, but torch.cuda.is_available() is False (torch "
                           f"{torch.__version__}); use --device cpu")
    return device


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def _resolve_dtype(dtype, device: torch.device):
    """The autocast dtype (None = float32, no autocast). ``auto``: bf16 on CUDA when supported, else float32."""
    if dtype in (None, "", "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return None if DTYPES[dtype] is torch.float32 else DTYPES[dtype]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def median_ci(values, level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of ``values`` (independent draws): the order
    statistics x_(j) and x_(k) around rank n/2, j and k from the binomial(n, 1/2) count of draws below the
    median (normal approximation, half-width z·√n/2); None for fewer than 6 values, where it would span
    them all."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 6:
        return None
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    half_width = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half_width) - 1)  # 0-based rank of x_(j), rounded outwards
    high = min(n - 1, math.ceil(n / 2 + half_width))
    return ordered[low], ordered[high]


def _paired(times, reference_times) -> tuple[float, list[float] | None]:
    """The median and its 95% interval (:func:`median_ci`) of the per-round ratios ``times / reference``."""
    ratios = [t / r for t, r in zip(times, reference_times)]
    interval = median_ci(ratios)
    return statistics.median(ratios), None if interval is None else list(interval)


def _rss_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Give the C allocator's free memory back to the OS (glibc ``malloc_trim``), so that a step's peak shows
    in the resident set size instead of reusing memory cached by earlier steps."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_memory_mb(run_step, device: torch.device) -> float | None:
    """Peak memory of one ``run_step()`` above what was in use before it (see the module docstring)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run_step()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
    if device.type == "cpu" and _reset_peak_rss():
        before = _rss_bytes("VmRSS")
        run_step()
        peak = _rss_bytes("VmHWM")
        if before is not None and peak is not None:
            return max(0, peak - before) / 2 ** 20
    run_step()
    return None


# ---------------------------------------------------------------------------------------------------------
# building models
# ---------------------------------------------------------------------------------------------------------
def _create_backbone(name: str, image_size: int, random_init: bool, data_root=None):
    """``(model, info, note)`` from :func:`lorsp.backbones.create_backbone`; real weights when present (data
    root, timm cache), else random weights with a note. ViT-style models get ``img_size=image_size``."""
    from .backbones import WeightsUnavailableError, create_backbone, fold_frozen_backbone

    def make(random):
        try:
            model, info = create_backbone(name, random_init=random, data_root=data_root, img_size=image_size)
        except TypeError:  # models without an img_size argument (CNNs)
            model, info = create_backbone(name, random_init=random, data_root=data_root)
        return fold_frozen_backbone(model, image_size), info  # as the trainer runs it

    if random_init:
        model, info = make(True)
        return model, info, "random weights (--random-init)"
    try:
        model, info = make(False)
        return model, info, ""
    except WeightsUnavailableError as error:
        model, info = make(True)
        return model, info, f"random weights: no pretrained weights available ({str(error)[:120]}…)"


def _lorsp_with_backend(image_size, backend, **kwargs):
    """LoRSP with its fused LIF gate on ``backend`` (``eager`` or ``compile``, :class:`LoRSPPrompter`'s option)."""
    from .prompters import build_prompter

    kwargs = {**kwargs, "fused": True, "backend": backend}
    return build_prompter("lorsp", image_size=image_size, **kwargs), f"lorsp(fused=True, backend={backend!r})"


def _build_prompter(method: str, image_size: int, prompter_kwargs: dict):
    """``(prompter or None, source)``."""
    from .prompters import build_prompter, list_prompters

    if method in ("lp", "lp-cached"):
        return None, "no prompt"
    if method == "lorsp-fused":
        return _lorsp_with_backend(image_size, "eager", **prompter_kwargs.get("lorsp", {}))
    if method == "lorsp-compiled":
        return _lorsp_with_backend(image_size, "compile", **prompter_kwargs.get("lorsp", {}))
    if method == "lorsp-reference":
        kwargs = {**prompter_kwargs.get("lorsp", {}), "fused": False}
        return build_prompter("lorsp", image_size=image_size, **kwargs), "lorsp(fused=False): autograd through LIF"
    registered = list_prompters()
    if method in registered:
        return build_prompter(method, image_size=image_size, **prompter_kwargs.get(method, {})), "registry"
    raise ValueError(f"unknown method {method!r}; expected a registered prompter ({', '.join(registered)}) "
                     f"or one of {', '.join(SPECIAL_METHODS)}")


def _build_model(backbone, info, prompter, num_classes: int):
    """:class:`lorsp.model.PromptedModel` with a linear head (``prompter=None`` for LP and the floor)."""
    from .model import PromptedModel

    return PromptedModel(backbone, prompter, head="linear", num_classes=num_classes, mean=info.mean, std=info.std)


# ---------------------------------------------------------------------------------------------------------
# one configuration: callables for a step, the prompt alone and the saved-tensor count
# ---------------------------------------------------------------------------------------------------------
class _Config:
    def __init__(self, method, model, prompter, x, y, device, amp_dtype, sources, channels_last):
        self.method, self.model, self.prompter = method, model, prompter
        self.x, self.y, self.device, self.amp_dtype = x, y, device, amp_dtype
        self.sources = sources
        self.channels_last = channels_last
        self.times: list[float] = []
        self.prompt_times: list[float] = []
        self.features = None
        self.optimizer = None
        if method == "floor":
            return
        params = model.trainable_parameters()
        if method == "lp-cached":
            with torch.no_grad(), self._autocast():
                self.features = model.features(x).float()
            params = [p for p in model.head.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
        model.train()  # the frozen backbone stays in eval mode (PromptedModel.train)
        if prompter is not None:
            self.prompt_grad = torch.ones_like(x)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def forward_loss(self):
        """The loss of one step (forward only)."""
        if self.method == "floor":
            x = self.x.detach().requires_grad_()
            with self._autocast():
                features = self.model.features(x)  # no prompt; the head is not used
            return features.float().sum()
        if self.method == "lp":
            with torch.no_grad(), self._autocast():
                features = self.model.features(self.x)
            return F.cross_entropy(self.model.head(features.float()).float(), self.y)
        if self.method == "lp-cached":
            return F.cross_entropy(self.model.head(self.features).float(), self.y)
        with self._autocast():
            logits = self.model(self.x)
        return F.cross_entropy(logits.float(), self.y)

    def step(self):
        loss = self.forward_loss()
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()

    def prompt_step(self):
        """The prompt generator alone: x → prompter(x), backward of a fixed gradient."""
        for p in self.prompter.parameters():
            p.grad = None
        with self._autocast():
            out = self.prompter(self.x)
        out.backward(self.prompt_grad.to(out.dtype))

    def saved_mb(self) -> float:
        from .prompters.fused import SavedTensorMeter

        params = list(self.model.parameters()) + list(self.model.buffers())
        with SavedTensorMeter(exclude=params) as meter:
            loss = self.forward_loss()
        del loss
        return meter.megabytes


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------------------
def bench_meta(device) -> dict:
    """What ran the benchmark: CPU model and cores, GPU name, versions."""
    device = _resolve_device(device) if not isinstance(device, torch.device) else device
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
    methods = _split(methods)
    if not methods:
        raise ValueError("methods is empty; give e.g. methods=['lorsp', 'lorvp']")
    backbones = _split(backbones)
    if not backbones:
        raise ValueError("backbones is empty; give e.g. backbones=['mobilenetv2']")
    batch_sizes, image_sizes = _ints(batch_size), _ints(image_size)
    steps, warmup = int(steps), int(warmup)
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    if run_steps is not None and (isinstance(run_steps, bool) or not isinstance(run_steps, int) or run_steps < 1):
        raise ValueError(f"run_steps must be None or an integer >= 1, got {run_steps!r}")
    run_steps = warmup + steps if run_steps is None else run_steps
    device = _resolve_device(device)
    amp_dtype = _resolve_dtype(dtype, device)
    prompter_kwargs = dict(prompter_kwargs or {})
    channels_last = device.type == "cuda"
    rows = []
    for backbone_name in backbones:
        for size in image_sizes:
            backbone, info, weights_note = _create_backbone(backbone_name, size, random_init, data_root)
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
    floor = _Config("floor", _build_model(backbone, info, None, num_classes).to(device), None, x, y, device,
                    amp_dtype, {}, channels_last)
    configs = [floor]
    for method in methods:
        torch.manual_seed(seed)
        prompter, prompter_source = _build_prompter(method, size, prompter_kwargs)
        if callable(getattr(prompter, "plan_run", None)):
            prompter.plan_run(run_steps)  # as the trainer does for a run of that length
        model = _build_model(backbone, info, prompter, num_classes).to(device)
        configs.append(_Config(method, model, prompter, x, y, device, amp_dtype,
                               {"prompter": prompter_source, "model": "lorsp.model.PromptedModel"}, channels_last))
    for round_index in range(warmup + steps):
        for config in configs:
            seconds = _timed(config.step, device)
            if round_index >= warmup:
                config.times.append(seconds)
            if config.prompter is not None:
                seconds = _timed(config.prompt_step, device)
                if round_index >= warmup:
                    config.prompt_times.append(seconds)
        if progress:
            print(f"  round {round_index + 1}/{warmup + steps}", file=sys.stderr, flush=True)
    peak = {id(c): _peak_memory_mb(c.step, device) for c in configs}
    saved = {id(c): c.saved_mb() for c in configs}
    q1, floor_ms, q3 = (v * 1e3 for v in _quartiles(floor.times))
    floor_row_extra = {"floor_ms_iqr": q3 - q1, "floor_peak_mem_mb": peak[id(floor)], "floor_saved_mb": saved[id(floor)]}
    rows = []
    lp_ms = None
    for config in configs[1:]:
        q1, step_ms, q3 = (v * 1e3 for v in _quartiles(config.times))
        prompt_ms = prompt_iqr = None
        if config.prompt_times:
            p1, prompt_ms, p3 = (v * 1e3 for v in _quartiles(config.prompt_times))
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
        row["ratio_to_floor_paired"], row["ratio_to_floor_paired_ci95"] = _paired(config.times, floor.times)
        row["ratio_to_lorvp_paired"], row["ratio_to_lorvp_paired_ci95"] = (
            _paired(config.times, lorvp_config.times) if lorvp_config is not None else (None, None))
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


# ---------------------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------------------
def _fmt(value, digits=1, suffix=""):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}{suffix}"


def _fmt_ci(value, interval) -> str:
    text = _fmt(value, 3)
    return text if not interval else f"{text} ({interval[0]:.3f}–{interval[1]:.3f})"


def format_table(rows: list[dict]) -> str:
    """A plain-text table of the rows: step ± IQR, floor, ratio to the floor and to LoR-VP, prompt alone,
    images/s, peak and saved memory."""
    header = ("backbone", "size", "batch", "device", "method", "step ms", "± IQR", "floor ms", "×floor",
              "×LoR-VP", "×LoR-VP paired (95% CI)", "prompt ms", "img/s", "peak MB", "saved MB")
    lines = []
    for r in rows:
        lines.append((r["backbone"], str(r["image_size"]), str(r["batch_size"]), r["device"], r["method"],
                      _fmt(r["step_ms"]), _fmt(r["step_ms_iqr"]), _fmt(r["floor_ms"]), _fmt(r["ratio_to_floor"], 3),
                      _fmt(r.get("ratio_to_lorvp"), 3),
                      _fmt_ci(r.get("ratio_to_lorvp_paired"), r.get("ratio_to_lorvp_paired_ci95")),
                      _fmt(r["prompt_ms"]), _fmt(r["images_per_s"], 0), _fmt(r["peak_mem_mb"]), _fmt(r.get("saved_mb"))))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    notes = []
    for r in rows:
        if r["method"] == "lp-cached" and r.get("speedup_vs_lp"):
            notes.append(f"{r['backbone']}@{r['image_size']}: LP with cached features is "
                         f"{r['speedup_vs_lp']:.1f}× faster per epoch than LP through the backbone")
        if r.get("weights_note"):
            notes.append(f"{r['backbone']}: {r['weights_note']}")
    if any(r["peak_mem_mb"] is None for r in rows):
        notes.append("peak MB –: no peak-memory source on this platform (CUDA allocator or Linux /proc)")
    return "\n".join(out + sorted(set(notes), key=notes.index))


def write_json(rows: list[dict], path, meta: dict | None = None) -> Path:
    """``{"meta": …, "rows": […]}`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"meta": meta or {}, "rows": rows}, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``lorsp bench`` options."""
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated methods: registered prompters (lorsp = its default backend), "
                             "lorsp-reference, lorsp-fused (eager), lorsp-compiled, lp, lp-cached "
                             "(default: %(default)s)")
    parser.add_argument("--backbones", default="mobilenetv2",
                        help="comma-separated backbones (short names or timm names; default: %(default)s)")
    parser.add_argument("--batch-size", default="32", help="batch size(s), comma-separated (default: %(default)s)")
    parser.add_argument("--image-size", default="128", help="image size(s), comma-separated (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="autocast dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default: %(default)s)")
    parser.add_argument("--run-steps", type=int, default=None, metavar="N",
                        help="tell the prompters the run takes N training steps (default: warmup + steps); on a "
                             "CPU LoRSP's default backend compiles for runs of at least "
                             "lorsp.prompters.fused.CPU_COMPILE_MIN_STEPS steps")
    parser.add_argument("--random-init", action="store_true",
                        help="random backbone weights (timing does not depend on the weights)")
    parser.add_argument("--data-root", default=None, help="data root for local weights / datasets")
    parser.add_argument("--output", default=None, help="write the rows as JSON to this file")
    parser.add_argument("--pipeline", default=None, metavar="DATASET",
                        help="instead: compare the on-device input pipeline with the DataLoader on DATASET")
    parser.add_argument("--pipeline-images", type=int, default=512,
                        help="images for --pipeline (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for --pipeline")
    parser.add_argument("--quiet", action="store_true", help="no per-round progress on stderr")
    return parser


def main(args) -> int:
    """Run ``lorsp bench`` from parsed arguments; prints the table, writes ``--output``."""
    if getattr(args, "pipeline", None):
        from .data.gpu_pipeline import bench_pipeline

        result = bench_pipeline(args.pipeline, batch_size=_ints(args.batch_size)[0],
                                image_size=_ints(args.image_size)[0], device=args.device,
                                max_images=args.pipeline_images, num_workers=args.workers, root=args.data_root)
        print(f"{result['dataset']} ({result['images']} images, batch {result['batch_size']}, "
              f"{result['image_size']} px, {result['device']}): DataLoader with {result['num_workers']} workers "
              f"{result['dataloader_images_per_s']:,.0f} images/s, decode-once pipeline "
              f"{result['device_pipeline_images_per_s']:,.0f} images/s ({result['speedup']:.1f}×); decoding once "
              f"took {result['decode_s']:.2f} s, {result['bank_mb']:.1f} MB of uint8")
        if args.output:
            print(f"wrote {write_json([result], args.output, bench_meta(args.device))}")
        return 0
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    rows = run_bench(args.methods, args.backbones, args.batch_size, args.image_size, args.device, args.steps,
                     args.warmup, args.random_init, dtype=args.dtype, data_root=args.data_root,
                     progress=not args.quiet, run_steps=args.run_steps)
    meta = bench_meta(args.device)
    meta["loadavg_after"] = meta.pop("loadavg_before", None)
    meta["loadavg_before"] = load_before
    meta["command"] = "lorsp bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "lorsp bench"
    print(f"device: {meta['gpu'] or meta['cpu']} ({meta['cpu_count']} cores), torch {meta['torch']}")
    print(format_table(rows))
    if args.output:
        path = write_json(rows, args.output, meta)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # python -m lorsp.bench
    parser = add_arguments(argparse.ArgumentParser(description=DESCRIPTION, epilog=EPILOG,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter))
    raise SystemExit(main(parser.parse_args()))
