"""The bench's measurements: timing a step (synchronised on CUDA), quartiles, a distribution-free interval for a
median (:func:`median_ci`), paired ratios, and the peak memory of one step; and its argument parsing."""
from __future__ import annotations

import math
import statistics
import time

import torch


def parse_list(value) -> list[str]:
    """A comma-separated string (or a list) as a list of its non-empty, stripped items."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [str(v).strip() for v in value if str(v).strip()]


def parse_ints(value) -> list[int]:
    """One integer, a list, or a comma-separated string of them as positive integers; ValueError otherwise."""
    out = []
    for item in parse_list(value) if isinstance(value, str) else (value if isinstance(value, (list, tuple)) else [value]):
        try:
            number = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"expected positive integers, got {item!r}") from None
        if number < 1:
            raise ValueError(f"expected positive integers, got {number}")
        out.append(number)
    return out


def resolve_device(device) -> torch.device:
    """``auto`` (or none): CUDA when there is one, else the CPU; any other name as torch reads it."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} asked for, but torch.cuda.is_available() is False (torch "
                           f"{torch.__version__}); use --device cpu")
    return device


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype, device: torch.device):
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


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """The first quartile, median and third quartile of ``values`` (inclusive method)."""
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


def paired_ratios(times, reference_times) -> tuple[float, list[float] | None]:
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


def peak_memory_mb(run_step, device: torch.device) -> float | None:
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


def timed(fn, device) -> float:
    """Seconds ``fn()`` takes, bracketed by a synchronisation on CUDA."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start
