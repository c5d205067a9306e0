"""The Markdown tables of ``benchmarks/README.md``, rendered from the JSON records (so every number there can be
traced to a record).

    python benchmarks/tables.py benchmarks/cpu-mobilenetv2-128-a.json benchmarks/cpu-generator-128.json

A ``lorsp bench`` record (``{"meta": …, "rows": […]}``) gives one table per backbone, image size and batch size; a
``generator_variants.py`` record (a list of variants) gives the generator table; ``lorsp bench --pipeline`` records
give one table of the input pipelines, which sets each against the fastest LoRSP training step (the default
``lorsp``) at the same image size, batch size and device among the bench records given: the pipeline must deliver
at least the images/s of the step it feeds.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

LABELS = {
    "lorsp-reference": "lorsp-reference (autograd through every LIF step)",
    "lorsp": "lorsp (the default: `auto` = {auto})",
    "lorsp-fused": "lorsp-fused (`backend=\"eager\"`)",
    "lorsp-compiled": "lorsp-compiled (`backend=\"compile\"`)",
    "lp": "lp (through the backbone)",
}


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


def bench_tables(record: dict, name: str) -> str:
    meta, rows = record["meta"], record["rows"]
    out = []
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["backbone"], row["image_size"], row["batch_size"], row["device"]), []).append(row)
    for (backbone, size, batch, device), group in groups.items():
        first = group[0]
        out.append(f"`{name}`: {backbone}, {size} px, batch {batch}, {device}, {first['dtype']}; {meta['time_utc']}, "
                   f"load average {_load(meta.get('loadavg_before'))} → {_load(meta.get('loadavg_after'))}, "
                   f"{first['steps']} timed rounds")
        out.append("")
        out.append("| method | step ms (median ± IQR) | ×floor (medians) | ×floor (paired, 95% CI) | ×LoR-VP (medians) | "
                   "×LoR-VP (paired, 95% CI) | prompt alone ms | images/s | saved MB |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        floor_ms = first["floor_ms"]
        out.append(f"| floor (backbone fwd + input bwd) | {floor_ms:.0f} ± {first['floor_ms_iqr']:.0f} | 1 | 1 | – | – "
                   f"| – | {_num(batch / floor_ms * 1e3, 0)} | {_num(first['floor_saved_mb'], 0)} |")
        auto = "compile on CUDA" if device.startswith("cuda") else "eager on CPU"
        for row in group:
            label = LABELS.get(row["method"], row["method"]).format(auto=auto)
            out.append(
                f"| {label} | {row['step_ms']:.1f} ± {row['step_ms_iqr']:.1f} | {_num(row['ratio_to_floor'])} | "
                f"{_paired(row, 'floor')} | {_num(row.get('ratio_to_lorvp'))} | "
                f"{_paired(row, 'lorvp')} | {_num(row['prompt_ms'], 1)} | "
                f"{_num(row['images_per_s'], 0)} | {_num(row['saved_mb'], 1)} |")
        cached = next((r for r in group if r["method"] == "lp-cached" and r.get("speedup_vs_lp")), None)
        if cached:
            out.append("")
            out.append(f"LP with cached features: {cached['speedup_vs_lp']:.0f}× faster per step than LP through the "
                       f"backbone.")
        out.append("")
    return "\n".join(out)


def _paired(row: dict, versus: str) -> str:
    """The paired ratio with its 95% interval (records from before the interval was kept show none)."""
    value, interval = row.get(f"ratio_to_{versus}_paired"), row.get(f"ratio_to_{versus}_paired_ci95")
    if versus == "lorvp" and row["method"] == "lorvp":
        return "1"
    return _num(value) if not interval else f"{_num(value)} ({interval[0]:.3f}–{interval[1]:.3f})"


def _load(values) -> str:
    return "–" if not values else "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def generator_table(rows: list, name: str) -> str:
    first = rows[0]
    out = [f"`{name}`: batch {first['batch_size']}, {first['image_size']} px, {first['dtype']}, {first['device']}", "",
           "| variant | forward ms | backward ms | rel. error δ | rel. error ∂P | rel. error ∂B |",
           "|---|---|---|---|---|---|"]
    for row in rows:
        out.append(f"| {row['variant']} | {row['forward_ms']:.1f} | {row['backward_ms']:.1f} | "
                   f"{row['rel_err_delta']:.0e} | {row['rel_err_grad_projection']:.0e} | "
                   f"{row['rel_err_grad_basis']:.0e} |")
    return "\n".join(out) + "\n"


def pipeline_table(pipelines: list[tuple[str, dict]], steps: list[dict]) -> str:
    """The input pipelines (``lorsp bench --pipeline`` rows) against the fastest ``lorsp`` step of ``steps`` at the
    same image size, batch size and device."""
    out = ["| record | images | batch | px | device | DataLoader workers | DataLoader images/s | decode-once images/s "
           "| speed-up | fastest LoRSP step it feeds, images/s | decode-once ÷ step |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in pipelines:
        fed = [s for s in steps if s["method"] == "lorsp" and s["image_size"] == row["image_size"]
               and s["batch_size"] == row["batch_size"] and s["device"] == row["device"]]
        step = max(fed, key=lambda s: s["images_per_s"], default=None)
        feeds = "–" if step is None else f"{_num(step['images_per_s'], 0)} ({step['backbone']})"
        ratio = "–" if step is None else _num(row["device_pipeline_images_per_s"] / step["images_per_s"], 2)
        out.append(f"| `{name}` | {row['images']} | {row['batch_size']} | {row['image_size']} | {row['device']} | "
                   f"{row['num_workers']} | {_num(row['dataloader_images_per_s'], 0)} | "
                   f"{_num(row['device_pipeline_images_per_s'], 0)} | {row['speedup']:.1f}× | {feeds} | {ratio} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", nargs="+", type=Path)
    steps, pipelines = [], []
    for path in parser.parse_args().records:
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("rows") and "dataloader_images_per_s" in record["rows"][0]:
            pipelines += [(path.name, row) for row in record["rows"]]
        elif isinstance(record, dict) and "rows" in record:
            print(bench_tables(record, path.name))
            steps += record["rows"]
        elif isinstance(record, list) and record and "variant" in record[0]:
            print(generator_table(record, path.name))
        else:
            raise SystemExit(f"{path}: neither a `lorsp bench` record ({{'meta', 'rows'}}), a `lorsp bench --pipeline` "
                             f"record nor a generator_variants.py record (a list of variants)")
    if pipelines:
        print(pipeline_table(pipelines, steps))


if __name__ == "__main__":
    main()
