"""The day the desk grid is complete, rehearsed: every experiment chapter headlines a COMPLETE set of desk records.

A fabricated, clearly fake set of desk records for every chapter's desk grid (``tests/_desk_records.py``: record
files in the engine's shape, prompt weights of the real prompters) is put where ``LORSP_RESULTS`` points, and
each chapter's headline code runs on it: the switch to the committed desk records, the banner, the table
beside the paper's numbers and the smoke runs, the claims' verdicts, the training curves, the resolution cost,
the prompt-lr deviation (backbones), the shifted accuracies (ood), the sweeps (hyperparameters) and the
prompt gallery drawn from the records' ``prompt.safetensors``. One chapter (backbones) is executed whole as a
notebook. Nothing here is written under the repository's ``results/``.
"""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from lorsp import experiments as ex
from _desk_records import REPO, all_runs, executed_notebook_text, fabricate_records, fabricated_rehearsal

SMOKE = "smoke"


@pytest.fixture(autouse=True)
def _v1_protocol(monkeypatch):
    """This module rehearses desk protocol v1 (its records are in the repository's history); v2's rehearsal is
    test_desk_v2_rehearsal.py."""
    monkeypatch.setenv("LORSP_DESK_PROTOCOL", "v1")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """``(results root with a complete fake desk set of protocol v1, runs folder with fake smoke records)``."""
    return fabricated_rehearsal(tmp_path_factory, "v1")


@pytest.fixture
def env(rehearsal, monkeypatch):
    root, runs = rehearsal
    monkeypatch.setenv("LORSP_RESULTS", str(root))
    monkeypatch.setenv("LORSP_RUNS", str(runs))
    return root, runs


def test_lorsp_results_overrides_the_committed_root(rehearsal, monkeypatch):
    root, _ = rehearsal
    monkeypatch.delenv("LORSP_RESULTS", raising=False)
    assert ex.results_root() == ex.RESULTS_ROOT
    assert ex.committed_status("prompt_gallery", "desk", root) == (2, 2)
    monkeypatch.setenv("LORSP_RESULTS", str(root))
    assert ex.results_root() == root
    assert ex.results_root(REPO / "elsewhere") == REPO / "elsewhere"  # an explicit argument wins
    for chapter in ex.CHAPTERS:  # read through the variable, without passing the root
        found, total = ex.committed_status(chapter, "desk")
        assert found == total > 0, chapter
    assert "desk" in ex.load_larger("backbones", SMOKE)
    search = ex.find_dissection_record()
    assert search.found and search.scale == "desk" and search.record_dir.is_relative_to(root)
    assert ex.shown_path(root / "desk") == "$LORSP_RESULTS/desk"


def test_fabricated_records_are_fake_complete_and_never_in_the_repository(rehearsal):
    root, _ = rehearsal
    import json
    runs = all_runs("desk")
    for run in runs:
        folder = root / "desk" / ex.run_key(run)
        record = json.loads((folder / "record.json").read_text())
        assert record["fabricated_for_tests"] is True
        assert (folder / "prompt.safetensors").is_file()
    with pytest.raises(ValueError, match="never go under"):
        fabricate_records(REPO / "results", runs=runs[:1])


@pytest.mark.parametrize("chapter", ["sparsifiers", "downstream", "ood", "hyperparameters", "prompt_gallery"])
def test_chapter_headlines_the_complete_desk_records(env, chapter):
    root, runs_root = env
    ours = ex.collect(ex.grid(chapter, SMOKE), runs_root / SMOKE)
    evidence = ex.headline_evidence(chapter, SMOKE, ours, runs_root / SMOKE)
    assert evidence.from_committed and evidence.scale == "desk", evidence.note()
    assert len(evidence.frame) == len({ex.run_key(r) for r in ex.grid(chapter, "desk")})
    assert "come from the committed `desk` records" in evidence.note()
    assert "committed under $LORSP_RESULTS/desk/" in str(evidence.banner())
    best, scale = evidence.frame, evidence.scale
    if chapter != "prompt_gallery":
        sources = evidence.sources(SMOKE, ours)
        assert list(sources) == ["desk", f"{SMOKE}: the check that the code runs today"]
        table = ex.chapter_table(chapter, sources)
        shown = set(table.columns.get_level_values(0))
        assert any("desk" in s for s in shown) and any("the check that the code runs today" in s for s in shown)
        if chapter != "hyperparameters":
            assert any(s.startswith("paper") for s in shown), shown
        desk = table[[c for c in table.columns if "desk" in c[0]]]
        assert (desk != "—").to_numpy().any()
        if chapter in ("sparsifiers", "hyperparameters"):  # desk runs fewer keep ratios / sweep points
            assert (desk == "not in the desk grid").to_numpy().any(), desk
        ex.style_compare(table, "rehearsal").to_html()
        sentences, claims = ex.chapter_claims(chapter, best, scale=scale)
        assert not claims.empty and (claims["verdict"] != "not run").all(), claims[["claim", "verdict"]]
        assert f"`{scale}` scale" in ex.closing_paragraph(sentences, claims, scale)
    if chapter == "ood":
        long = ex.ood_long(best)
        assert len(set(long["dataset"])) > 2  # the source test set and the shifted sets
    if chapter == "hyperparameters":
        assert set(ex.hyper_long(best)["sweep"]) == {"groups", "rank", "tau", "v_threshold"}
    if chapter == "prompt_gallery":
        if ex.desk_missing():
            pytest.skip(f"no desk data here: {ex.desk_missing()[0]}")
        gallery = ex.prompt_gallery(evidence.runs, evidence.results_dir, n_images=2)
        assert set(gallery.panels) == {"LoR-VP", "LoRSP"}
        assert ex.gallery_claims(gallery, scale=scale)
        return
    curves = ex.training_curves(chapter, scale, evidence.results_dir)
    assert not curves.empty and not ex.flattening(curves).empty
    assert not ex.resolution_cost(chapter, scale, evidence.results_dir).empty


def test_backbones_notebook_runs_on_the_complete_desk_records(env):
    """The headline chapter executed whole: desk headline, banner, table beside the paper and smoke,
    verdicts, curves, resolution cost, the deviation, and the smoke runs as today's check."""
    pytest.importorskip("nbformat")
    text = executed_notebook_text("backbones", timeout=300)
    for expected in ("come from the committed `desk` records", "committed under $LORSP_RESULTS/desk/",
                     "paper (reported, %)", "ours · desk (%)", "the check that the code runs today",
                     "What the numbers say at `desk` scale", "paired difference (pp)",
                     "prompt lr 0.03 (deviation)", "training loss"):
        assert expected in text, expected


# --- the findings page: every chapter's verdicts at its headline scale ---------------------------------------
def test_findings_gather_every_chapters_claims_from_the_complete_records(rehearsal):
    root, _ = rehearsal
    found = ex.findings(root)
    assert list(found.chapters["chapter"]) == list(ex.CLAIM_CHAPTERS)
    assert set(found.chapters["headline scale"]) == {"desk"}
    assert (found.chapters["resolution"] == "64×64 px").all()
    claims = found.claims()
    for chapter in ex.CLAIM_CHAPTERS:   # the same claims, pairs and verdicts as the chapter's own page
        evidence = ex.headline_evidence(chapter, SMOKE, pd.DataFrame(), root / SMOKE, results_root=root)
        _, own = ex.chapter_claims(chapter, evidence.frame, scale="desk")
        mine = claims[claims["chapter"] == chapter]
        assert list(mine["claim"]) == list(own.groupby("claim", sort=False)["claim_verdict"].first().index)
        assert list(mine["verdict"]) == list(own.groupby("claim", sort=False)["claim_verdict"].first())
    counts = found.counts()
    assert counts["all claims"].sum() == len(claims) == found.chapters["claims"].sum()
    assert f"{len(claims)} claims of the paper checked on committed records at `desk` scale" in found.sentence()
    forest = found.forest()
    assert len(forest) == int(((found.pairs["measure"] == ex.ACCURACY) & (found.pairs["verdict"] != "not run")).sum())
    assert not forest["pair"].str.contains("sparser").any() and forest["pair"].str.startswith("ood: ").any()
    assert set(ex.VERDICT_COLOURS) == set(ex.VERDICTS)   # the figure has a colour for every verdict


def test_findings_claim_nothing_without_complete_records(tmp_path, rehearsal):
    root, _ = rehearsal
    partial = tmp_path / "results"
    (partial / "desk").mkdir(parents=True)
    first = ex.run_key(ex.grid("backbones", "desk")[0])
    shutil.copytree(root / "desk" / first, partial / "desk" / first)   # one record of 44: incomplete
    found = ex.findings(partial)
    assert set(found.chapters["headline scale"]) == {"none"} and found.claims().empty and found.forest().empty
    assert "desk: 1 of 44" in found.chapters.set_index("chapter").loc["backbones", "committed records"]
    assert found.sentence().startswith("No chapter has complete committed records")
