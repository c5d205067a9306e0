"""What every experiment chapter shows on the committed ``desk`` records, reduced to numbers, labels and
verdicts (never whole records: a record may gain metadata keys without changing what a chapter says).

:func:`chapter_outputs` computes, through the public functions the chapter notebooks call, each chapter's
side-by-side table, its claims (sentences and the per-pair table), the closing paragraph, the training-loss
flattening, the resolution cost, the training-length check, the prompt-lr deviation and the ledger's rows.
``python tests/_chapter_outputs.py`` writes the snapshot ``tests/data/chapter_outputs.json`` that
``tests/test_chapter_outputs.py`` compares against.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO / "tests" / "data" / "chapter_outputs.json"
SCALE = "desk"
CLAIM_CHAPTERS = ("backbones", "downstream", "ood", "sparsifiers", "hyperparameters")
#: the columns of a claims table that are numbers, labels or verdicts
CLAIM_FIELDS = ("claim", "better", "worse", "n", "better_mean", "worse_mean", "difference", "ci_low", "ci_high",
                "detectable", "p_value", "p_holm", "verdict", "claim_verdict", "note", "measure")
LEDGER_FIELDS = ("comparison", "chapter", "also_in", "claims", "better", "worse", "measure", "paper_difference",
                 "paper_source", "n", "sd", "detectable", "blind", "protocol", "substitutions", "unstable",
                 "unstable_note", "degenerate_note", "still_note", "a", "b", "difference", "ci_low", "ci_high",
                 "p_value", "p_holm", "direction", "verdict", "magnitude")


def _plain(value):
    """A JSON-able value: floats rounded to 9 significant digits, NaN as None."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.9g}")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _table(frame: pd.DataFrame, columns=None) -> list[dict]:
    """A DataFrame as a list of records of its chosen ``columns`` (all when None), index included."""
    if frame is None or frame.empty:
        return []
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.set_axis([" | ".join(str(p) for p in c if p != "") for c in frame.columns], axis=1)
    keep = [c for c in (columns or frame.columns) if c in frame.columns]
    return [{str(k): _plain(row[k]) for k in keep} for _, row in frame.iterrows()]


def chapter_outputs(results_root=REPO / "results") -> dict:
    """``{chapter: {name: table records or sentences}}`` at the committed ``desk`` scale."""
    from lorsp import experiments as ex
    out = {}
    for chapter in CLAIM_CHAPTERS + ("prompt_gallery",):
        evidence = ex.headline_evidence(chapter, "smoke", pd.DataFrame(), results_root / "smoke", results_root)
        assert evidence.from_committed and evidence.scale == SCALE, f"{chapter}: desk records incomplete"
        best = evidence.frame
        got = {"runs": _table(best, ["label", "dataset", "backbone", "seed", ex.ACCURACY, "sparsity",
                                     "firing_rate"])}
        if chapter in CLAIM_CHAPTERS:
            got["table"] = _table(ex.chapter_table(chapter, {SCALE: best}))
            sentences, claims = ex.chapter_claims(chapter, best, scale=SCALE)
            got["verdicts"] = sentences
            got["claims"] = _table(claims, CLAIM_FIELDS)
            got["closing"] = ex.closing_paragraph(sentences, claims, SCALE)
        curves = ex.training_curves(chapter, SCALE, evidence.results_dir)
        flat = ex.flattening(curves) if not curves.empty else pd.DataFrame()
        got["flattening"] = _table(flat)
        got["flattening_sentence"] = ex.flattening_sentence(flat, SCALE) if not flat.empty else ""
        got["resolution_cost"] = _table(ex.resolution_cost(chapter, SCALE, evidence.results_dir))
        for name, check in (("training_length", ex.training_length_check), ("deviation", ex.prompt_lr_deviation)):
            sentences, table = check(best, SCALE)
            got[f"{name}_verdicts"], got[name] = sentences, _table(table, CLAIM_FIELDS)
        out[chapter] = got
    return out


def ledger_outputs(results_root=REPO / "results") -> list[dict]:
    """The ledger's rows (numbers, labels and verdicts) on the committed records."""
    from lorsp.experiments.ledger import build_ledger
    ledger = build_ledger(results_root)
    return _table(ledger.rows, LEDGER_FIELDS)


def all_outputs(results_root=REPO / "results") -> dict:
    return {"chapters": chapter_outputs(results_root), "ledger": ledger_outputs(results_root)}


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(all_outputs(), indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
