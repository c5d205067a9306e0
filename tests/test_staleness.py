"""Committed records stay true (issue 15): the first steps of a recorded run, re-run now, give the losses its
record keeps (``loss_trace``); a mismatch names the records to regenerate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorsp.experiments import desk_missing
from lorsp.experiments.staleness import compare_trace, replay_losses, replayable, stale_records

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted((REPO / "results" / "desk").glob("*/record.json"))


def _tiny_record(tmp_path) -> Path:
    from lorsp.train import TrainConfig, train
    config = TrainConfig(dataset="synthetic", method="lorsp", epochs=2, batch_size=8, image_size=32,
                         train_per_class=4, test_per_class=1, device="cpu", random_init=True, seed=3,
                         prompter_kwargs=dict(groups=2, rank=2), output=str(tmp_path / "run"), trace_steps=8)
    record = train(config, progress=False)
    assert len(record["loss_trace"]) == 8
    return Path(record["record_path"])


def test_replay_matches_a_fresh_record_and_a_changed_run_is_named(tmp_path):
    path = _tiny_record(tmp_path)
    record = json.loads(path.read_text())
    assert replayable(record)
    losses = replay_losses(record, steps=3)
    assert len(losses) == 3 and compare_trace(record, losses) is None
    assert stale_records([path], steps=3) == ([], [path])
    # what training produces changes (here: the learning rate the record says it used) -> named as stale
    record["config"]["lr"] = record["config"]["lr"] * 10
    path.write_text(json.dumps(record))
    problems, replayed = stale_records([path], steps=3)
    assert replayed == [path] and len(problems) == 1
    assert str(path) in problems[0] and "regenerate" in problems[0] and "step 1" in problems[0]


def test_committed_desk_records_are_reproduced():
    if not COMMITTED:
        pytest.skip("no committed results/desk records yet")
    for path in COMMITTED:
        record = json.loads(path.read_text())
        assert record.get("loss_trace"), f"{path} has no loss_trace: regenerate it with python -m lorsp.experiments"
        assert record.get("git_commit") and record.get("versions", {}).get("torch"), path
    missing = desk_missing()
    if missing:
        pytest.skip(f"the data root lacks what the desk records were trained on: {'; '.join(missing)}")
    problems, replayed = stale_records(COMMITTED, steps=3, budget_seconds=40)
    assert not problems, "\n".join(problems)
    if any(replayable(json.loads(p.read_text())) for p in COMMITTED):
        assert replayed


def test_the_replay_runs_the_gate_backend_the_record_was_trained_with(monkeypatch):
    """A LoRSP record trained by the eager gate is replayed eagerly even where ``backend="auto"`` would load a
    built compiled gate; an explicit backend in the record's options stays."""
    from lorsp.experiments import staleness

    seen = []
    monkeypatch.setattr("lorsp.engine.train", lambda config, **kwargs: seen.append(config.prompter_kwargs))
    record = {"config": {"dataset": "synthetic", "method": "lorsp", "prompter_kwargs": {"groups": 2}},
              "lif_backend": "eager", "loss_trace": [1.0]}
    staleness.replay_losses(record, steps=1)
    record["config"]["prompter_kwargs"] = {"backend": "compile"}
    staleness.replay_losses(record, steps=1)
    del record["lif_backend"]
    record["config"]["method"], record["config"]["prompter_kwargs"] = "lorvp", {}
    staleness.replay_losses(record, steps=1)
    assert seen == [{"groups": 2, "backend": "eager"}, {"backend": "compile"}, {}]


TRAINED_REPLAYS = Path(__file__).resolve().parent / "data" / "trained_replays.json"


def test_committed_records_of_every_family_re_evaluate_exactly_and_replay_from_their_trained_state():
    """One committed desk record per method family (LP and ILM-VP included): its prompt and head, re-evaluated on
    its whole test set, classify exactly as many images correctly as its record says (not compared for the
    schema-1 Dropout records, evaluated with unseeded masks); and 3 steps from that trained state give the losses
    measured when its prompt file was committed (tests/data/trained_replays.json)."""
    from lorsp.experiments.staleness import FAMILIES, check_trained, family
    if not COMMITTED:
        pytest.skip("no committed results/desk records yet")
    missing = desk_missing()
    if missing:
        pytest.skip(f"the data root lacks what the desk records were trained on: {'; '.join(missing)}")
    replays = json.loads(TRAINED_REPLAYS.read_text(encoding="utf-8"))
    problems, checked = check_trained(COMMITTED, replays)
    assert not problems, "\n".join(problems)
    present = {family(json.loads(p.read_text())) for p in COMMITTED}
    checked_families = {name.split(" · ")[0] for name in checked}
    assert checked_families == present and {"LP", "ILM-VP", "LoRSP"} <= present <= set(FAMILIES.values())
    backbones = {json.loads(p.read_text())["config"]["backbone"] for p in COMMITTED}
    assert {json.loads(Path(done["record"]).read_text())["config"]["backbone"] for done in checked.values()} == backbones
    compared = {name.split(" · ")[0] for name, done in checked.items() if isinstance(done["accuracy"], tuple)}
    assert present - compared <= {"Dropout"}, checked


def test_every_backbone_has_a_representative(tmp_path):
    """A backbone that no family's cheapest record uses gets its own (its LoRSP record), so that CI checks the
    trained state of every backbone's records, not only of the backbone with the smallest test sets."""
    from lorsp.experiments.staleness import representatives

    def write(name, method, backbone, n_test):
        folder = tmp_path / name
        folder.mkdir()
        record = {"config": {"method": method, "head": "linear", "backbone": backbone}, "status": "completed",
                  "data": {"n_test": n_test}}
        (folder / "record.json").write_text(json.dumps(record))
        return folder / "record.json"

    lorsp_small = write("a-lorsp", "lorsp", "mobilenetv2", 50)
    lp = write("b-lp", "none", "mobilenetv2", 50)
    other = write("c-autovp", "pad", "efficientnet_lite0", 10_000)
    lorsp_other = write("d-lorsp", "lorsp", "efficientnet_lite0", 10_000)
    chosen = representatives([lorsp_small, lp, other, lorsp_other])
    assert chosen == {"AutoVP": other, "LP": lp, "LoRSP": lorsp_small}   # every backbone already covered
    chosen = representatives([lorsp_small, lp, lorsp_other])
    assert chosen == {"LP": lp, "LoRSP": lorsp_small, "LoRSP · efficientnet_lite0": lorsp_other}


def test_a_re_evaluation_or_trained_replay_that_differs_is_named(monkeypatch, tmp_path):
    """The comparison itself: another accuracy, or other losses, name the record (no data needed)."""
    import contextlib
    from lorsp.experiments import staleness
    folder = tmp_path / "desk" / "some-run"
    folder.mkdir(parents=True)
    record = {"config": {"method": "lpf", "head": "linear"}, "final_accuracy": 0.5, "data": {"n_test": 10},
              "status": "completed", "prompt_sha256": "ab" * 32, "schema": "lorsp.run/2"}
    (folder / "record.json").write_text(json.dumps(record))
    path = folder / "record.json"
    monkeypatch.setattr(staleness, "trained_run", lambda *a, **k: contextlib.nullcontext(None))
    monkeypatch.setattr(staleness, "replay_from_trained", lambda run, steps: [1.0, 0.9, 0.8])
    monkeypatch.setattr("lorsp.results.check_prompt_file", lambda record, path: None)
    replays = {"some-run": {"prompt_sha256": "ab" * 32, "losses": [1.0, 0.9, 0.8]}}
    monkeypatch.setattr(staleness, "reevaluate", lambda run: {"test_accuracy": 0.5, "test_images": 10})
    assert staleness.check_trained([path], replays)[0] == []
    monkeypatch.setattr(staleness, "reevaluate", lambda run: {"test_accuracy": 0.6, "test_images": 10})
    problems = staleness.check_trained([path], replays)[0]
    assert len(problems) == 1 and str(path) in problems[0] and "6 of 10" in problems[0] and "says 5" in problems[0]
    monkeypatch.setattr(staleness, "reevaluate", lambda run: {"test_accuracy": 0.5, "test_images": 10})
    replays["some-run"]["losses"] = [1.0, 0.95, 0.8]
    problems = staleness.check_trained([path], replays)[0]
    assert len(problems) == 1 and "step 1" in problems[0] and "trained state" in problems[0]
    replays["some-run"]["prompt_sha256"] = "cd" * 32  # the prompt file was regenerated: its replay is not recorded
    problems = staleness.check_trained([path], replays)[0]
    assert len(problems) == 1 and "--record-replays" in problems[0]
