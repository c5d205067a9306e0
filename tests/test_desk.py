"""The desk scale (issue 15): its grids, its refusal to run without the real data, the runner's work/results
split and resume, the dry run's plan, and which scale a chapter's headline comes from."""
from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from lorsp import experiments as ex
from lorsp.experiments.runs import run_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _v1_protocol(request, monkeypatch):
    """These tests are about desk protocol v1's grid (MobileNetV2, 5 + 3 seeds, the deviation, LP at 224 px and
    at 20 epochs; v2's are in test_desk_v2.py), except the hours table, which is that of the committed records."""
    if request.node.name != "test_running_md_shows_the_hours_of_the_committed_desk_records":
        monkeypatch.setenv("LORSP_DESK_PROTOCOL", "v1")


def _desk():
    return ex.scale_setup("desk", require_data=False)


def _seed_groups(runs):
    groups = defaultdict(set)
    for run in runs:
        config = {k: v for k, v in run_config(run).items() if k != "seed"}
        groups[json.dumps(config, sort_keys=True, default=str)].add(run["seed"])
    return groups


def test_desk_grid_seeds_headline_five_every_other_run_three():
    setup = _desk()
    headline = ex.grid("backbones", setup=setup)
    labels = {r["tags"]["label"] for r in headline}
    assert {"LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP", "LPF", "LoRSP"} <= labels
    for seeds in _seed_groups([r for r in headline if r["tags"]["label"] != ex.LP_224_LABEL
                               and "deviation" not in r["tags"] and "training_length" not in r["tags"]]).values():
        assert len(seeds) == 5
    for chapter in ex.CHAPTERS:
        runs = ex.grid(chapter, setup=setup)
        assert runs, chapter
        # the gallery draws seed 0 of runs that the downstream chapter trains with 3 seeds
        pool = runs if chapter != "prompt_gallery" else ex.grid("downstream", setup=setup)
        counts = _seed_groups(pool)
        for run in runs:
            config = {k: v for k, v in run_config(run).items() if k != "seed"}
            assert len(counts[json.dumps(config, sort_keys=True, default=str)]) >= 3, (chapter, run["tags"])
        assert all(r["device"] == "cpu" and r["image_size"] in (64, 224) and not r["random_init"] for r in runs)
        assert all(r["dataset"] in ("cifar10", "tiny-imagenet") for r in runs)


def test_desk_grid_smaller_sweeps_and_references_on_the_same_images():
    setup = _desk()
    sparsifiers = ex.grid("sparsifiers", setup=setup)
    assert {r["keep_ratio"] for r in sparsifiers if "keep_ratio" in r} == set(setup.sparsifier_ratios)
    assert len(ex.grid("sparsifiers", setup=setup)) < len(ex.grid("sparsifiers", "mini"))
    assert len(ex.grid("hyperparameters", setup=setup)) < len(ex.grid("hyperparameters", "mini"))
    for chapter in ("backbones", "downstream"):
        runs = ex.grid(chapter, setup=setup)
        lp = {(r["dataset"], r["seed"]): r for r in runs if r["tags"]["label"] == "LP"}
        refs = [r for r in runs if r["tags"]["label"] == ex.LP_224_LABEL]
        assert refs
        for ref in refs:
            twin = lp[(ref["dataset"], ref["seed"])]
            assert ref["image_size"] == 224 and ref["method"] == "none" and ref["cache_features"] == "memory"
            same = ("dataset", "train_per_class", "test_per_class", "seed", "epochs", "lr", "batch_size")
            assert {k: ref[k] for k in same} == {k: twin[k] for k in same}
            assert ex.run_key(ref) != ex.run_key(twin)
    # the headline's shared runs are trained once: OOD's LP, EVP and LoR-VP are the backbones chapter's
    keys = {ex.run_key(r) for r in ex.grid("backbones", setup=setup)}
    ood = [r for r in ex.grid("ood", setup=setup) if r["tags"]["label"] in ("LP", "EVP", "LoR-VP")]
    assert ood and all(ex.run_key(r) in keys for r in ood)


def test_desk_deviation_is_an_extra_labelled_column_beside_the_papers_runs():
    setup = _desk()
    runs = ex.grid("backbones", setup=setup)
    deviation = [r for r in runs if "deviation" in r["tags"]]
    paper = {(r["tags"]["label"], r["seed"]): r for r in runs if "deviation" not in r["tags"]}
    assert sorted({r["tags"]["label"] for r in deviation}) == [ex.deviation_label("LoR-VP", ex.DESK_PROMPT_LR)]
    assert sorted(r["seed"] for r in deviation) == [0, 1, 2] and "(deviation)" in deviation[0]["tags"]["label"]
    for run in deviation:
        twin = paper[(run["tags"]["method_label"], run["seed"])]  # the paper's run: everything else the same
        assert run["prompt_lr"] == ex.DESK_PROMPT_LR and run["lr"] == twin["lr"] == 0.01 and "prompt_lr" not in twin
        assert {k: v for k, v in run_config(run).items() if k != "prompt_lr"} == run_config(twin)
    assert all("prompt_lr" not in r for chapter in ex.CHAPTERS if chapter != "backbones"
               for r in ex.grid(chapter, setup=setup))
    assert not any("deviation" in r["tags"] for scale in ("smoke", "mini") for r in ex.grid("backbones", scale))
    assert f"prompt at a learning rate of {ex.DESK_PROMPT_LR:g}" in " ".join(setup.notes)


def test_prompt_lr_deviation_tests_its_own_questions_on_seed_pairs(tmp_path):
    folder = tmp_path / "desk"
    runs = ex.grid("backbones", "desk")
    fast = ex.deviation_label("LoR-VP", ex.DESK_PROMPT_LR)
    frame = _fake_seed_pairs(folder, runs, {"LP": 0.600, "LoR-VP": 0.600, "LoRSP": 0.598, fast: 0.630},
                             drifting=fast, drift=0.001)
    sentences, table = ex.prompt_lr_deviation(frame, "desk")
    verdicts = {(row.better, row.worse): row.verdict for row in table.itertuples()}
    assert verdicts == {(fast, "LoR-VP"): "holds", (fast, "LP"): "holds", ("LoRSP", fast): "reversed"}
    assert set(table["n"]) == {3} and len(sentences) == 3
    assert ex.prompt_lr_deviation(frame[frame["label"] != fast], "desk")[1].empty
    assert ex.prompt_lr_deviation(frame, "smoke")[1].empty           # the smoke scale has no deviation


@pytest.mark.parametrize("chapter, datasets", [("backbones", ["cifar10"]),
                                               ("downstream", ["cifar10", "tiny-imagenet"])])
def test_desk_trains_lp_again_for_the_papers_epochs_on_the_same_images(chapter, datasets):
    setup = _desk()
    runs = ex.grid(chapter, setup=setup)
    long_label = ex.training_length_label(ex.PAPER_EPOCHS)
    checks = [r for r in runs if r["tags"]["label"] == long_label]
    lp = {(r["dataset"], r["seed"]): r for r in runs if r["tags"]["label"] == "LP"}
    assert sorted((r["dataset"], r["seed"]) for r in checks) == [(d, s) for d in datasets for s in (0, 1, 2)]
    assert ex.PAPER_EPOCHS == 20
    for run in checks:
        twin = lp[(run["dataset"], run["seed"])]
        assert run["epochs"] == run["eval_every"] == 20 and twin["epochs"] == setup.epochs == 3
        different = {k for k, v in run_config(run).items() if run_config(twin).get(k) != v}
        assert different == {"epochs", "eval_every"} and ex.run_key(run) != ex.run_key(twin)
    assert not any("training_length" in r["tags"] for scale in ("smoke", "mini") for r in ex.grid(chapter, scale))
    # on CIFAR-10 the downstream chapter's check is the backbones chapter's runs, trained once
    headline = {ex.run_key(r) for r in ex.grid("backbones", setup=setup)}
    assert all(ex.run_key(r) in headline for r in checks if r["dataset"] == "cifar10")


def test_training_length_check_pairs_lp_at_the_papers_epochs_with_lp_by_seed(tmp_path):
    folder = tmp_path / "desk"
    runs = ex.grid("backbones", "desk")
    long_label = ex.training_length_label(ex.PAPER_EPOCHS)
    frame = _fake_seed_pairs(folder, runs, {"LP": 0.612, long_label: 0.575}, drifting=long_label, drift=0.002)
    sentences, table = ex.training_length_check(frame, "desk")
    assert table[["better", "worse", "n", "verdict"]].values.tolist() == [[long_label, "LP", 3, "reversed"]]
    assert len(sentences) == 1 and "20 epochs" in sentences[0] and "reversed" in sentences[0]
    assert ex.training_length_check(frame[frame["label"] != long_label], "desk")[1].empty
    assert ex.training_length_check(frame, "smoke")[1].empty        # only the desk scale runs the check
    assert long_label in set(frame["label"]) and long_label not in ex.chapter_table("backbones", {"desk": frame}).index


def test_training_length_check_asks_one_question_per_dataset(tmp_path):
    runs = ex.grid("downstream", "desk")
    long_label = ex.training_length_label(ex.PAPER_EPOCHS)
    frame = _fake_seed_pairs(tmp_path / "desk", runs, {"LP": 0.40, long_label: 0.43}, drifting=long_label,
                             drift=0.002)
    sentences, table = ex.training_length_check(frame, "desk")
    assert table["where_dataset"].tolist() == ["cifar10", "tiny-imagenet"] and set(table["n"]) == {3}
    assert set(table["verdict"]) == {"holds"} and len(sentences) == 2
    assert "(tiny-imagenet)" in sentences[1]


def test_runs_that_cache_features_share_a_folder_beside_their_run_folders(tmp_path):
    from lorsp.experiments.runner import FEATURE_CACHE_FOLDER, _train_config
    runs = [r for r in ex.grid("downstream", "desk") if r["dataset"] == "tiny-imagenet" and r["method"] == "none"]
    reference = [r for r in runs if r["tags"]["label"] == ex.LP_224_LABEL]
    assert len(reference) == 3 and all(r["train_per_class"] == 100 for r in reference)   # every local image
    for run in runs:
        config = _train_config(run, tmp_path / ex.run_key(run))
        shared = str(tmp_path / FEATURE_CACHE_FOLDER) if run in reference else None
        assert config.feature_cache_dir == shared, run["tags"]["label"]


def test_desk_refuses_to_run_without_the_real_data(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        ex.scale_setup("desk", data_root=tmp_path)
    message = str(error.value)
    assert "mobilenetv2_100_tflite_in1k.safetensors" in message and "cifar10" in message
    assert "lorsp data import" in message
    assert ex.scale_setup("desk", data_root=tmp_path, require_data=False).fallbacks == []
    from lorsp.scale import SCALES
    assert SCALES["desk"].allow_fallbacks is False and SCALES["desk"].device == "cpu"


def test_dry_run_plans_every_chapter_within_ten_hours(capsys):
    assert ex.main(["--scale", "desk", "--chapter", "all", "--dry-run"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("chapter "):].splitlines()
    rows = {line.split()[0]: line.split() for line in table[1:] if line.strip()}
    assert set(ex.RUN_ORDER) | {"all"} <= set(rows)
    assert list(rows)[0] == "backbones"  # the headline chapter first
    planned = {name: float(row[3]) for name, row in rows.items()}
    assert 0 < planned["all"] <= 10.0
    assert planned["all"] == pytest.approx(sum(v for k, v in planned.items() if k != "all"), abs=0.05)


def test_dry_run_marks_shifted_evaluations_done_only_when_every_shift_is_recorded(tmp_path):
    run = next(r for r in ex.grid("ood", "desk") if r.get("tags", {}).get("eval_on"))
    targets, key = run["tags"]["eval_on"], ex.run_key(run)
    chapters = {"backbones": [run], "ood": [run]}   # trained by the first, evaluated on shifts by the second
    (tmp_path / key).mkdir()

    def shifted_line(shifted):
        record = {"status": "completed", "experiment": {"shifted": shifted}}
        (tmp_path / key / "record.json").write_text(json.dumps(record))
        lines = []
        ex.dry_run(chapters, tmp_path, out=lines.append)
        return next(line for line in lines if f"{key}:shifted" in line)

    assert not shifted_line({t: 0.5 for t in targets[:-1]}).endswith("done")
    assert shifted_line({t: 0.5 for t in targets}).endswith("done")


def test_results_folder_is_not_ignored_by_git():
    paths = ["results/desk/cifar10-x/record.json", "results/desk/cifar10-x/prompt.safetensors"]
    result = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True)
    if result.returncode == 128:
        pytest.skip("not a git checkout")
    assert result.stdout.strip() == "", f"git ignores {result.stdout.split()}"


# --- the runner: work folder vs results folder, resume after a kill -------------------------------------------
def _tiny_setup(tmp_path):
    setup = ex.scale_setup("smoke", data_root=tmp_path / "no-data")   # synthetic + random init
    setup.datasets = {"synthetic": dict(train_per_class=2, test_per_class=2)}
    setup.image_size, setup.epochs, setup.batch_size = 32, 2, 8
    return setup


def test_runner_resumes_after_a_kill_and_publishes_only_record_and_prompt(tmp_path, monkeypatch):
    for module in ("lorsp.train", "lorsp.data", "lorsp.backbones"):
        pytest.importorskip(module)
    setup = _tiny_setup(tmp_path)
    runs = [r for r in ex.grid("ood", setup=setup) if r["seed"] == 0 and r["method"] in ("none", "lorsp")]
    results, work = tmp_path / "results", tmp_path / "work"
    # the second run is killed after its first epoch: the first one's record is kept, the second resumes
    lines = []
    monkeypatch.setenv("LORSP_FAULT_INJECTION", json.dumps({"raise_after_epoch": 1}))
    with pytest.raises(Exception, match="fault injection"):
        ex.run_grid(runs[1:], results, work_dir=work, log=lines.append)
    monkeypatch.delenv("LORSP_FAULT_INJECTION")
    key = ex.run_key(runs[1])
    assert (work / key / "checkpoint.pt").is_file() and not (results / key / "record.json").exists()
    frame = ex.run_grid(runs, results, work_dir=work, log=lines.append, planned=lambda run: 1.0)
    assert frame["status"].tolist() == ["completed", "completed"] and frame.attrs["trained"] == 2
    record = json.loads((results / key / "record.json").read_text())
    assert record["resumed_from_epoch"] == 1 and record["epochs_completed"] == 2
    assert record["experiment"]["machine"]["cpu_count"] >= 1 and record["experiment"]["wall_seconds"] > 0
    assert record["git_commit"] is None or len(record["git_commit"]) >= 40
    assert record["versions"]["torch"] and "run_dir" not in record   # no path of the training machine
    for run in runs:
        published = sorted(p.name for p in (results / ex.run_key(run)).iterdir())
        expected = ["prompt.safetensors", "record.json"] if run["method"] != "none" else ["record.json"]
        assert published == expected or published == ["prompt.safetensors", "record.json"]
    assert any("left about" in line and key in line for line in lines)
    mtimes = {p: p.stat().st_mtime_ns for p in results.rglob("record.json")}
    again = ex.run_grid(runs, results, work_dir=work, log=lines.append)   # nothing left to train
    assert again.attrs["trained"] == 0 and {p: p.stat().st_mtime_ns for p in results.rglob("record.json")} == mtimes
    # a run's model comes back from the results folder alone (record + prompt), as from its checkpoint
    import torch
    from_results, config = ex.load_run_model(runs[1], results)
    from_work, _ = ex.load_run_model(runs[1], work)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(from_results(x), from_work(x))
    shifted = ex.evaluate_shifts(runs, results, shifts=["gaussian noise"])
    assert shifted[f"{ex.ACCURACY}:gaussian noise"].between(0, 100).all()


def test_max_hours_starts_no_run_past_the_budget(tmp_path):
    setup = _tiny_setup(tmp_path)
    runs = [r for r in ex.grid("ood", setup=setup) if r["seed"] == 0][:2]
    frame = ex.run_grid(runs, tmp_path / "results", work_dir=tmp_path / "work", log=lambda line: None,
                        planned=lambda run: 3600.0, max_seconds=1800.0)
    assert frame.attrs["trained"] == 0 and len(frame.attrs["left"]) == 2 and frame.empty


# --- which numbers the book shows -----------------------------------------------------------------------------
def _fake_record(folder: Path, run: dict, accuracy: float, losses=(2.0, 1.2, 1.0)):
    path = folder / ex.run_key(run) / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = [{"epoch": e + 1, "train_loss": loss, "train_accuracy": 0.5} for e, loss in enumerate(losses)]
    path.write_text(json.dumps({"status": "completed", "final_accuracy": accuracy, "best_accuracy": accuracy,
                                "config": run_config(run), "metrics": metrics,
                                "experiment": {"key": ex.run_key(run), "tags": run["tags"]}}))


def _fake_seed_pairs(folder: Path, runs: list[dict], accuracy: dict[str, float], drifting: str, drift: float):
    """Fake records of seeds 0–2 of the ``runs`` whose label is in ``accuracy``: each label's accuracy plus a
    per-seed offset shared by all labels (so pairs by seed are tight), and ``drift × seed`` more for
    ``drifting``; returns their rows (:func:`ex.collect`)."""
    for run in runs:
        label = run["tags"]["label"]
        if label in accuracy and run["seed"] < 3:
            _fake_record(folder, run, accuracy[label] + [0.0, 0.004, -0.003][run["seed"]]
                         + (drift * run["seed"] if label == drifting else 0.0))
    return ex.collect(runs, folder)


def test_headline_comes_from_complete_committed_records_only(tmp_path):
    import pandas as pd
    root = tmp_path / "results"
    smoke = pd.DataFrame({"label": ["LoRSP"], "accuracy_pct": [10.0]})
    runs = ex.grid("prompt_gallery", "desk")
    _fake_record(root / "desk", runs[0], 0.5)
    evidence = ex.headline_evidence("prompt_gallery", "smoke", smoke, tmp_path / "runs", results_root=root)
    assert not evidence.from_committed and evidence.scale == "smoke" and evidence.frame is smoke
    assert "`desk` records are incomplete: 1 of 2 runs" in evidence.note()
    assert list(evidence.sources("smoke", smoke)) == ["smoke"]
    _fake_record(root / "desk", runs[1], 0.6)
    evidence = ex.headline_evidence("prompt_gallery", "smoke", smoke, tmp_path / "runs", results_root=root)
    assert evidence.from_committed and evidence.scale == "desk" and len(evidence.frame) == 2
    assert "committed `desk` records" in evidence.note()
    assert list(evidence.sources("smoke", smoke)) == ["desk", "smoke: the check that the code runs today"]
    assert "desk" in str(evidence.banner())


def test_training_curves_and_resolution_cost_from_records(tmp_path):
    folder = tmp_path / "desk"
    runs = ex.grid("backbones", "desk")
    for run in runs:
        label = run["tags"]["label"]
        if label in ("LP", "LoRSP", ex.LP_224_LABEL) and run["seed"] < 3:
            accuracy = {"LP": 0.60, "LoRSP": 0.61, ex.LP_224_LABEL: 0.80}[label] + 0.001 * run["seed"]
            _fake_record(folder, run, accuracy, losses=(1.7, 0.9, 0.85))
    curves = ex.training_curves("sparsifiers", "desk", folder)   # LP comes from the backbones chapter
    assert set(curves["label"]) == {"LP", "LoRSP"} and sorted(curves["epoch"].unique()) == [1, 2, 3]
    flat = ex.flattening(curves)
    assert flat["last epoch's share of the drop"].iloc[0] == pytest.approx(0.05 / 0.85)
    assert flat["flattened"].tolist() == ["yes", "yes"]   # 6% of the drop, under FLATTENED_BELOW
    assert ex.flattening_sentence(flat, "desk").startswith("At `desk` the training loss has flattened")
    cost = ex.resolution_cost("backbones", "desk", folder)
    assert cost["dataset"].tolist() == ["cifar10"] and cost["seeds"].tolist() == [3]
    assert cost["paired difference (pp)"].iloc[0].startswith("+20.00")


def test_flattening_says_which_curves_have_not_flattened_with_their_share():
    curves = pd.DataFrame([dict(label=label, dataset="cifar10", seed=seed, epoch=epoch, train_loss=loss)
                           for label, losses in (("LP", (1.8, 1.2, 0.8)), ("LoRSP", (1.8, 1.0, 0.95)))
                           for seed in (0, 1) for epoch, loss in zip((1, 2, 3), losses)])
    flat = ex.flattening(curves).set_index("label")
    assert flat.loc["LP", "last epoch's share of the drop"] == pytest.approx(0.4)
    assert flat["flattened"].to_dict() == {"LP": "no", "LoRSP": "yes"}
    sentence = ex.flattening_sentence(flat.reset_index(), "desk")
    assert "**not flattened**" in sentence and "40% (LP, cifar10)" in sentence
    assert "flattened (6% (LoRSP, cifar10))" in sentence
    assert ex.flattening_sentence(ex.flattening(curves.iloc[:0]), "desk") == ""


def test_chapter_hours_sum_the_records_wall_time_beside_the_plan(tmp_path):
    from lorsp.experiments.hours import chapter_hours, hours_markdown, marked_table, write_marked_table
    folder = tmp_path / "desk"
    runs = ex.grid("backbones", "desk")
    for run, seconds in zip(runs[:3], (600.0, 1200.0, 1800.0)):
        _fake_record(folder, run, 0.6)
        path = folder / ex.run_key(run) / "record.json"
        record = json.loads(path.read_text())
        record["experiment"]["wall_seconds"] = seconds
        path.write_text(json.dumps(record))
    frame = chapter_hours(folder)
    first = frame.iloc[0]
    assert first["chapter"] == "backbones" and first["records"] == 3 and first["measured hours"] == pytest.approx(1.0)
    assert first["runs it adds"] == len({ex.run_key(r) for r in runs}) and first["planned hours"] > 0
    assert frame.iloc[-1]["chapter"] == "all" and frame.iloc[-1]["measured hours"] == pytest.approx(1.0)
    table = hours_markdown(frame)
    assert f"| 1 | `backbones` | {first['runs it adds']} | 3 of {first['runs it adds']} |" in table
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- desk-hours:start -->\nold\n<!-- desk-hours:end -->\nafter\n")
    write_marked_table(page, table)
    assert marked_table(page.read_text()) == table and page.read_text().endswith("after\n")
    with pytest.raises(ValueError, match="x.md has no '<!-- desk-hours:start -->'"):
        marked_table("no markers", "x.md")
    path = folder / ex.run_key(runs[0]) / "record.json"
    record = json.loads(path.read_text())
    del record["experiment"]["wall_seconds"]
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="wall_seconds"):
        chapter_hours(folder)


def test_running_md_shows_the_hours_of_the_committed_desk_records():
    from lorsp.experiments.hours import chapter_hours, hours_markdown, marked_table
    page = REPO / "book" / "running.md"
    expected = hours_markdown(chapter_hours(REPO / "results" / "desk"))
    assert marked_table(page.read_text(), "book/running.md") == expected, (
        "book/running.md's hours table is not that of the committed desk records: run `python -m lorsp.experiments "
        "--scale desk --out results/desk --hours --hours-into book/running.md`")
