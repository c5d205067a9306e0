"""The prompt-lr search and the paper-lr column as the backbones chapter shows them (lorsp.experiments.search)."""
from __future__ import annotations

import math

import pandas as pd

from lorsp.experiments.grid import paper_lr_label, search_label
from lorsp.experiments.search import paper_lr_column, search_table, selected_lrs

PAPER_LR = 0.01


def _row(label, seed, accuracy, prompt_lr=None, val=None, backbone="mobilenetv2", dataset="cifar10"):
    return dict(key=f"{label}-{backbone}-{dataset}-{seed}-{prompt_lr}", status="completed", label=label,
                backbone=backbone, dataset=dataset, seed=seed, prompt_lr=prompt_lr, val_accuracy_pct=val,
                accuracy_pct=accuracy)


def _frame(lorsp_lr=0.003, lorvp_lr=PAPER_LR):
    """LoRSP selected 0.003 (better than the paper's lr on every seed), LoR-VP selected the paper's lr."""
    rows = []
    for method, val_by_lr in (("LoRSP", {0.003: 60.0, PAPER_LR: 58.0, 0.03: 30.0}),
                              ("LoR-VP", {0.003: 57.0, PAPER_LR: 59.0, 0.03: 50.0})):
        for lr, val in val_by_lr.items():
            rows.append(_row(search_label(method, lr), 0, val - 1, None if lr == PAPER_LR else lr, val))
    for seed in range(3):
        rows.append(_row("LoRSP", seed, 61.0 + 0.1 * seed + 0.05 * seed ** 2, lorsp_lr))
        rows.append(_row(paper_lr_label("LoRSP"), seed, 59.0 + 0.1 * seed, None))
        rows.append(_row("LoR-VP", seed, 58.0 + seed, None if lorvp_lr == PAPER_LR else lorvp_lr))
        rows.append(_row(paper_lr_label("LoR-VP"), seed, 58.0 + seed, None))
        rows.append(_row("LP", seed, 57.0, None))
    return pd.DataFrame(rows)


def test_the_search_table_shows_validation_accuracy_per_lr_and_the_headlines_lr():
    table = search_table(_frame(), PAPER_LR)
    assert list(table.columns) == ["val. acc. at 0.003", "val. acc. at 0.01 (paper's)", "val. acc. at 0.03",
                                   "selected lr"]
    lorsp = table.loc[("LoRSP", "mobilenetv2", "cifar10")]
    assert lorsp["val. acc. at 0.003"] == 60.0 and lorsp["selected lr"] == 0.003
    assert table.loc[("LoR-VP", "mobilenetv2", "cifar10"), "selected lr"] == PAPER_LR
    assert list(table.index.get_level_values("method")) == ["LoR-VP", "LoRSP"]   # the paper's order


def test_selected_lrs_come_from_the_headline_runs():
    chosen = selected_lrs(_frame(lorsp_lr=0.03), PAPER_LR)
    assert chosen[("LoRSP", "mobilenetv2", "cifar10")] == 0.03


def test_the_paper_lr_column_tests_only_where_the_selection_differs():
    sentences, table = paper_lr_column(_frame(), PAPER_LR, "desk")
    assert len(table) == 1 and table["claim"].iloc[0].startswith("LoRSP at its selected lr (0.003)")
    assert table["verdict"].iloc[0] == "holds" and math.isclose(table["difference"].iloc[0], 2.0 + 0.05 * 5 / 3)
    assert "1 its selected lr beats the paper's" in sentences[0]
    assert "selected the paper's lr (0.01) for LoR-VP (mobilenetv2, cifar10)" in sentences[1]


def test_a_protocol_without_a_search_shows_nothing():
    plain = _frame()[lambda f: ~f["label"].str.contains("search|paper lr")]
    assert search_table(plain, PAPER_LR).empty
    sentences, table = paper_lr_column(plain, PAPER_LR)
    assert sentences == [] and table.empty
    assert search_table(pd.DataFrame(), PAPER_LR).empty
