"""The bench's output: a text table of its rows (:func:`format_table`) and its JSON record (:func:`write_json`)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


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
