"""The day desk protocol v2 is complete, rehearsed: the chapters, the ledger and the backbones notebook on a
fabricated, clearly fake, COMPLETE set of v2 records (``tests/_desk_records.py``, written in two phases: the
prompt-lr search first, then the headline at the lrs the search selects). Nothing is written under the
repository's ``results/``; every number here is invented, so only the shape of what the book shows is checked.
"""
from __future__ import annotations

import pytest

from lorsp import experiments as ex
from lorsp.experiments import ledger as lg
from lorsp.experiments.grid import HEADLINE_PAIRS, PROMPTED_ROWS
from lorsp.experiments.scales import DESK2_BACKBONES, DESK2_DATASETS, desk2_seed_count
from lorsp.paper import display_name
from _desk_records import executed_notebook_text, fabricated_rehearsal

SMOKE = "smoke"


@pytest.fixture(scope="module")
def v2_root(tmp_path_factory):
    return fabricated_rehearsal(tmp_path_factory, "v2")


@pytest.fixture
def v2_env(v2_root, monkeypatch):
    root, runs = v2_root
    monkeypatch.setenv("LORSP_DESK_PROTOCOL", "v2")
    monkeypatch.setenv("LORSP_RESULTS", str(root))
    monkeypatch.setenv("LORSP_RUNS", str(runs))
    return root, runs


def test_every_chapter_headlines_the_complete_v2_records(v2_env):
    for chapter in ex.CHAPTERS:
        found, total = ex.committed_status(chapter, "desk")
        assert found == total > 0, (chapter, found, total)
        evidence = ex.headline_evidence(chapter, SMOKE, ex.collect(ex.grid(chapter, SMOKE), v2_env[1] / SMOKE),
                                        v2_env[1] / SMOKE)
        assert evidence.from_committed and evidence.scale == "desk", (chapter, evidence.note())
        assert "is being trained" not in evidence.note()   # the v2 status sentence is for v1's headline only
    backbones = ex.headline_evidence("backbones", SMOKE, ex.collect(ex.grid("backbones", SMOKE), v2_env[1] / SMOKE),
                                     v2_env[1] / SMOKE)
    assert set(backbones.frame["backbone"]) == set(DESK2_BACKBONES)
    assert set(backbones.frame["dataset"]) == set(DESK2_DATASETS)
    assert "shown under each" in backbones.note()   # a search point is also a headline or paper-lr seed


def test_the_backbones_page_shows_the_search_the_paper_lr_column_and_every_curve(v2_env):
    from lorsp.experiments.search import paper_lr_column, search_table
    evidence = ex.headline_evidence("backbones", SMOKE, ex.collect(ex.grid("backbones", SMOKE), v2_env[1] / SMOKE),
                                    v2_env[1] / SMOKE)
    table = search_table(evidence.frame, evidence.setup.lr)
    assert len(table) == len(PROMPTED_ROWS) * len(DESK2_BACKBONES) * len(DESK2_DATASETS)
    assert table["selected lr"].notna().all()
    assert set(table["selected lr"]) <= set(evidence.setup.prompt_lr_search)
    sentences, column = paper_lr_column(evidence.frame, evidence.setup.lr, "desk")
    assert sentences and (column.empty or (column["n"] == 3).all())
    curves = ex.training_curves("backbones", "desk", evidence.results_dir, labels=tuple(ex.BACKBONE_ROWS))
    flat = ex.flattening(curves)
    assert len(flat) == len(ex.BACKBONE_ROWS) * len(DESK2_BACKBONES) * len(DESK2_DATASETS)
    assert ex.prompt_lr_deviation(evidence.frame, "desk")[1].empty   # v2 has no deviation runs


def test_the_ledger_has_every_headline_pair_once_per_backbone_and_dataset(v2_env):
    ledger = lg.build_ledger(v2_env[0])
    rows = ledger.rows
    assert rows["comparison"].is_unique and not ledger.waiting
    for dataset in DESK2_DATASETS:
        for backbone in DESK2_BACKBONES:
            for better, worse in HEADLINE_PAIRS:
                name = f"{better} vs {worse} · {display_name(dataset)} · {display_name(backbone)}"
                row = rows[rows["comparison"] == name]
                assert len(row) == 1, (name, list(rows["comparison"]))
                planned = [desk2_seed_count(label, backbone, dataset) for label in (better, worse)]
                assert row["n"].iloc[0] == min(planned), name
                assert "Table II" in row["paper_source"].iloc[0] or "Table V" in row["paper_source"].iloc[0]
    assert not rows["comparison"].str.contains(r"\(search\)|paper lr|deviation").any()
    assert (rows["protocol"] == "proxy").all()
    assert rows["substitutions"].str.contains("backbone EfficientNet-Lite0").any()
    assert "labelled deviation" not in ledger.sentences()


def test_the_backbones_notebook_runs_on_the_complete_v2_records(v2_env):
    pytest.importorskip("nbformat")
    text = executed_notebook_text("backbones", timeout=600)
    for expected in ("come from the committed `desk` records", "efficientnet_lite0", "tiny-imagenet",
                     "The search: validation accuracy", "selected lr", "has no runs of the deviation",
                     "has no LP runs with cached features at 224 px", "Has the training loss flattened?"):
        assert expected in text, expected
