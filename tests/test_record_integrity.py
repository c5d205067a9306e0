"""Records that are one experiment and stay true (issue 25, item 6).

Every committed record vouches for its prompt file (``prompt_sha256``); a record that does not parse, or whose
prompt file is missing or damaged, is an error naming the file wherever records are read (never a run
silently counted as "not trained yet"); a random sparsifier's evaluation is repeatable; a chapter's records
of the current schema come from one clean state of the training code. Fast, and without data: CI runs these
with an empty data root too.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lorsp import results
from lorsp.experiments.records import stamp_prompt_sha256
from lorsp.experiments.store import RecordStore, read_run_record

REPO = Path(__file__).resolve().parent.parent
DESK = REPO / "results" / "desk"
COMMITTED = sorted(DESK.glob("*/record.json"))


def _copy_desk(tmp_path) -> Path:
    """A copy of the committed desk records under ``<tmp>/results/desk`` (a results root of its own)."""
    target = tmp_path / "results" / "desk"
    shutil.copytree(DESK, target)
    return target


def _first(folder: Path, pattern: str = "cifar10-mobilenetv2-lorsp-s0-*") -> Path:
    return sorted(folder.glob(f"{pattern}/record.json"))[0]


# ----------------------------------------------------------------------------------------------------
# 1. every committed record holds the sha256 of its prompt file
# ----------------------------------------------------------------------------------------------------
def test_every_committed_record_holds_the_sha256_of_its_prompt_file():
    if not COMMITTED:
        pytest.skip("no committed results/desk records")
    for path in COMMITTED:
        record = json.loads(path.read_text(encoding="utf-8"))
        prompt = path.parent / results.PROMPT_NAME
        assert record.get(results.PROMPT_SHA256_KEY), f"{path} has no prompt_sha256: run python -m " \
                                                      f"lorsp.experiments.records --stamp-sha256 {DESK}"
        assert prompt.is_file(), f"{prompt} is missing"
        assert results.file_sha256(prompt) == record[results.PROMPT_SHA256_KEY], f"{prompt} differs from its record"
        assert results.check_prompt_file(record, path) == prompt  # and it loads as a whole safetensors file


def test_the_engine_writes_the_sha256_of_the_prompt_file_it_saves(tmp_path):
    from lorsp.train import train
    from _train_helpers import tiny_config
    record = train(tiny_config(output=str(tmp_path / "run"), epochs=1), progress=False)
    prompt = tmp_path / "run" / results.PROMPT_NAME
    assert record[results.PROMPT_SHA256_KEY] == results.file_sha256(prompt)
    on_disk = json.loads((tmp_path / "run" / "record.json").read_text())
    assert on_disk[results.PROMPT_SHA256_KEY] == record[results.PROMPT_SHA256_KEY]
    assert on_disk["schema"] == results.RECORD_SCHEMA and on_disk["versions"]["lorsp_code"]
    assert results.read_record(tmp_path / "run" / "record.json")["status"] == "completed"


def test_stamping_adds_only_the_key_is_idempotent_and_never_blesses_a_damaged_prompt(tmp_path):
    source = _first(DESK).parent
    folder = tmp_path / "desk"
    shutil.copytree(source, folder / source.name)
    path = folder / source.name / "record.json"
    committed = path.read_bytes()
    record = json.loads(committed)
    digest = record.pop(results.PROMPT_SHA256_KEY)
    results.write_record(record, path.parent, name=path.name)  # as it was before stamping
    assert stamp_prompt_sha256(folder) == [path]
    assert path.read_bytes() == committed  # the key, in its place, and nothing else changed
    assert stamp_prompt_sha256(folder) == []  # idempotent
    prompt = path.parent / results.PROMPT_NAME
    prompt.write_bytes(prompt.read_bytes()[:-1] + b"\x00")  # same length, other bytes: still loads
    with pytest.raises(ValueError, match=f"(?s){path}.*{digest}"):
        stamp_prompt_sha256(folder)
    prompt.write_bytes(prompt.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{prompt}.*damaged"):
        stamp_prompt_sha256(folder)


# ----------------------------------------------------------------------------------------------------
# 2. a damaged record or prompt file is an error naming it, wherever records are read
# ----------------------------------------------------------------------------------------------------
def test_a_truncated_record_stops_the_headline_naming_the_file_instead_of_turning_it_back_to_smoke(tmp_path):
    """Tried before this check: truncating one record silently made two chapters headline their smoke runs."""
    from lorsp.experiments.evidence import committed_status, headline_evidence
    desk = _copy_desk(tmp_path)
    from lorsp.experiments import grid, run_key
    found, total = committed_status("backbones", "desk", tmp_path / "results")
    path = desk / run_key(grid("backbones", "desk")[0]) / "record.json"
    path.write_text(path.read_text()[:200])
    for read in (lambda: committed_status("backbones", "desk", tmp_path / "results"),
                 lambda: headline_evidence("backbones", "smoke", None, tmp_path / "runs", tmp_path / "results"),
                 lambda: _is_final(path), lambda: read_run_record(path),
                 lambda: results.load(desk, recursive=True)):
        with pytest.raises(ValueError, match=str(path)):
            read()
    assert found > 0 and total > 0


@pytest.mark.parametrize("damage", ["truncated", "one byte changed", "missing"])
def test_a_damaged_prompt_file_is_an_error_naming_it(tmp_path, damage):
    source = _first(DESK).parent
    folder = tmp_path / "desk" / source.name
    shutil.copytree(source, folder)
    prompt, path = folder / results.PROMPT_NAME, folder / "record.json"
    assert _is_final(path)
    data = prompt.read_bytes()
    if damage == "truncated":
        prompt.write_bytes(data[: len(data) // 2])
    elif damage == "one byte changed":
        prompt.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        prompt.unlink()
    expected = {"truncated": "damaged", "one byte changed": "sha256", "missing": "missing"}[damage]
    for read in (lambda: _is_final(path), lambda: read_run_record(path), lambda: results.read_record(path),
                 lambda: results.load(folder.parent, recursive=True)):
        with pytest.raises(ValueError, match=f"(?s){prompt}.*{expected}|{expected}.*{prompt}"):
            read()


def test_only_valid_json_that_is_no_record_is_skipped_by_load(tmp_path):
    source = _first(DESK).parent
    shutil.copytree(source, tmp_path / "run")
    (tmp_path / "notes.json").write_text('{"not": "a record"}')
    assert len(results.load(tmp_path, recursive=True)) == 1
    (tmp_path / "broken.json").write_text('{"config": {"back')
    with pytest.raises(ValueError, match="broken.json"):
        results.load(tmp_path, recursive=True)


# ----------------------------------------------------------------------------------------------------
# 3. evaluating a random sparsifier is repeatable
# ----------------------------------------------------------------------------------------------------
def _dropout_eval(tmp_path, batch_sizes):
    """Train a tiny Dropout run, then evaluate its model on its test set once per batch size."""
    from torch.utils.data import DataLoader
    from lorsp.experiments.evaluation import test_set_of
    from lorsp.train import build_run_model, evaluate, seed_everything, train
    from _train_helpers import tiny_config
    config = tiny_config(method="dropout", prompter_kwargs=dict(groups=2, rank=2, keep_ratio=0.3), epochs=1,
                         test_per_class=6, lr=0.5, seed=5, output=str(tmp_path / "run"))
    record = train(config, progress=False)
    seed_everything(config.seed)  # the random tiny backbone, as the run built it
    model, _ = build_run_model(config, record["data"]["num_classes"])
    from safetensors.torch import load_file
    model.load_state_dict(load_file(tmp_path / "run" / results.PROMPT_NAME), strict=False)
    model.eval()
    data = test_set_of(config)
    out = []
    for size in batch_sizes:
        torch.manual_seed(len(out))  # the global generator's state must not matter
        out.append(evaluate(model, DataLoader(data, batch_size=size), torch.device("cpu")))
    return record, out


def test_evaluating_a_dropout_run_twice_and_with_two_batch_sizes_gives_the_same_numbers(tmp_path):
    record, (first, again, other) = _dropout_eval(tmp_path, (8, 8, 3))
    assert first["test_images"] == 60
    for result in (again, other):
        assert result["test_accuracy"] == first["test_accuracy"]
        assert result["test_loss"] == pytest.approx(first["test_loss"], rel=1e-5)
        assert result["sparsity"] == pytest.approx(first["sparsity"], rel=1e-6)
    assert first["test_accuracy"] == record["final_accuracy"]  # as the run itself evaluated it


def test_dropout_evaluation_masks_are_per_image_and_per_run_seed_and_training_masks_follow_the_run():
    from lorsp.prompters import build_prompter
    torch.manual_seed(0)
    prompter = build_prompter("dropout", image_size=8, groups=2, rank=2, keep_ratio=0.4)
    torch.nn.init.normal_(prompter.factors.basis)
    x = torch.randn(6, 3, 8, 8)
    prompter.set_run_seed(1)
    prompter.eval()
    whole = prompter.prompt(x)
    assert torch.equal(torch.cat([prompter.prompt(x[3:]), prompter.prompt(x[:3])]), torch.cat([whole[3:], whole[:3]]))
    kept = (whole != 0).float().mean()
    assert 0.3 < kept < 0.5
    assert not torch.equal((whole != 0), (whole[[1, 0, 2, 3, 4, 5]] != 0))  # images get masks of their own
    prompter.set_run_seed(2)
    assert not torch.equal(prompter.prompt(x), whole)  # another run seed, other masks
    prompter.train()
    torch.manual_seed(7)
    first = prompter.prompt(x)
    torch.manual_seed(7)
    assert torch.equal(prompter.prompt(x), first) and not torch.equal(prompter.prompt(x), first)


# ----------------------------------------------------------------------------------------------------
# 4. a chapter's records come from one clean state of the training code
# ----------------------------------------------------------------------------------------------------
def _fake(name, commit, code, schema="lorsp.run/2"):
    return {"record_path": name, "git_commit": commit, "versions": {"lorsp_code": code}, "schema": schema}


def test_dirty_or_mixed_training_code_is_named_and_legacy_records_are_not_held_to_it():
    from lorsp.experiments.staleness import commit_problems
    clean = [_fake("a", "1" * 40, "c1"), _fake("b", "2" * 40, "c1")]
    assert commit_problems(clean) == []  # other commits, the same training code: one experiment
    dirty = commit_problems(clean + [_fake("c", "3" * 40 + "-dirty", "c1")])
    assert len(dirty) == 1 and "c was trained from a checkout with uncommitted changes" in dirty[0]
    mixed = commit_problems(clean + [_fake("d", "1" * 40, "c2")])
    assert len(mixed) == 1 and "mix 2 versions of the training code" in mixed[0] and "d" in mixed[0]
    assert commit_problems([_fake("e", "4" * 40, None), _fake("f", "5" * 40, None)])  # compared by commit
    legacy = [_fake("g", "6" * 40 + "-dirty", None, "lorsp.run/1"), _fake("h", "7" * 40, None, "lorsp.run/1")]
    assert commit_problems(legacy) == [] and len(commit_problems(legacy, since_schema=1)) == 2


def _chapters():
    from lorsp.experiments import RUN_ORDER
    return RUN_ORDER


def test_committed_chapters_of_the_current_schema_come_from_one_clean_training_code():
    """Enforced on every record of schema 2 or later (the new grid's): none dirty, one training code per chapter."""
    from lorsp.experiments.staleness import chapter_commit_problems
    problems = [p for chapter in _chapters() for p in chapter_commit_problems(chapter, "desk", REPO / "results")]
    assert not problems, "\n".join(problems)


def test_the_legacy_desk_records_would_fail_the_commit_check():
    """The schema-1 desk records predate the check (8 are -dirty, they mix 9 commits); the new grid replaces them.
    Once no schema-1 record is left this test has nothing to say and passes."""
    from lorsp.experiments.staleness import chapter_commit_problems, schema_version
    legacy = [p for p in COMMITTED if schema_version(json.loads(p.read_text())) < 2]
    if not legacy:
        return
    problems = [p for chapter in _chapters()
                for p in chapter_commit_problems(chapter, "desk", REPO / "results", since_schema=1)]
    assert problems  # the check does see what is wrong with them ...
    pytest.xfail(f"{len(legacy)} committed desk records are schema 1, from before one commit per chapter was "
                 f"required; held to it they give {len(problems)} problems, e.g. {problems[0][:160]} — the new "
                 f"grid (schema 2) is enforced by the test above")


def _is_final(record_path) -> bool:
    """Whether the store counts the run of ``record_path`` (``<folder>/<key>/record.json``) as done."""
    return RecordStore(record_path.parent.parent).is_final(record_path.parent.name)
