"""The trainer (lorsp.train), checkpoints (lorsp.checkpoint) and run records (lorsp.results).

Smoke size throughout: a tiny random timm backbone on 32 px synthetic images, 2–3 epochs; the real-data
test (CIFAR-10 with the offline MobileNetV2 weights) skips cleanly when the data root lacks them.
"""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest
import torch

import _train_helpers as helpers

from lorsp import results
from lorsp.checkpoint import atomic_write_bytes, load_checkpoint
from lorsp.train import (DivergenceError, EpochSampler, InjectedFault, TrainConfig, choose_loader, train)

tiny_config = helpers.tiny_config
TIMING_KEYS = {"epoch_seconds", "train_seconds", "images_per_second"}


def _metrics(record):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in record["metrics"]]


# -- config validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, words", [
    ("epochs", 0, "integer >= 1"), ("batch_size", -3, "integer >= 1"), ("lr", 0.0, "(0, 100]"),
    ("lr", float("nan"), "(0, 100]"), ("momentum", 1.0, "[0, 1)"), ("weight_decay", -1e-4, "[0, 1]"),
    ("schedule", "linear", "cosine"), ("amp", "fp8", "bf16"), ("train_per_class", 0, "integer >= 1"),
    ("seed", -1, "[0, 2**31)"), ("bad_image_policy", "ignore", "skip"), ("image_size", 0, "integer >= 1"),
    ("max_grad_norm", 0.0, "> 0"), ("device", "tpu", "cuda"), ("loader", "gpu", "dataloader"),
    ("eval_every", 0, "integer >= 1"), ("eval_batch_size", 0, "None or an integer >= 1"),
    ("max_steps", 2.5, "None or an integer >= 1"), ("trace_steps", -1, "integer >= 0"),
    ("prompt_lr", 0.0, "(0, 100]"), ("prompt_lr", float("inf"), "(0, 100]"),
    ("feature_cache_dir", 3, "None or a folder path"),
])
def test_config_validation_names_field_and_range(field, value, words):
    config = TrainConfig(**{field: value})
    with pytest.raises(ValueError) as info:
        config.validate()
    assert f"TrainConfig.{field}" in str(info.value) and words in str(info.value)


def test_protocol_defaults_are_method_md():
    config = TrainConfig().validate()
    assert (config.lr, config.momentum, config.weight_decay, config.schedule, config.batch_size, config.epochs,
            config.image_size) == (0.01, 0.9, 1e-4, "cosine", 256, 20, 224)


# -- samplers -----------------------------------------------------------------------------------------------
def test_epoch_sampler_order_depends_on_seed_and_epoch_only_and_ranks_add_up():
    single = EpochSampler(20, seed=3)
    single.set_epoch(2)
    order = list(single)
    again = EpochSampler(20, seed=3)
    again.set_epoch(2)
    assert list(again) == order and sorted(order) == list(range(20))
    single.set_epoch(3)
    assert list(single) != order
    ranks = [EpochSampler(20, seed=3, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(2)
    per_rank = [list(r) for r in ranks]
    # batch i of 4 per rank == single-process batch i of 8
    for i in range(0, 10, 4):
        assert sorted(per_rank[0][i:i + 4] + per_rank[1][i:i + 4]) == sorted(order[2 * i:2 * i + 8])
    evals = [list(EpochSampler(7, shuffle=False, rank=r, world_size=2)) for r in range(2)]
    assert sorted(evals[0] + evals[1]) == list(range(7))


# -- end to end ---------------------------------------------------------------------------------------------
def test_train_lorsp_synthetic_writes_checkpoint_record_and_prompt(tmp_path):
    run_dir = tmp_path / "run"
    record = train(tiny_config(output=str(run_dir), results_dir=str(tmp_path / "results")), progress=False)
    assert record["status"] == "completed" and record["reason"] is None
    assert 0.0 <= record["final_accuracy"] <= 1.0 and record["best_accuracy"] >= record["final_accuracy"]
    assert record["final_accuracy"] == record["metrics"][-1]["test_accuracy"]
    assert len(record["metrics"]) == 2 and record["epochs_completed"] == 2
    assert 0.0 <= record["firing_rate"] <= 1.0 and 0.0 <= record["sparsity"] <= 1.0
    assert record["prompt_params"] == record["prompt_params_closed_form"] == 32 * 2 * (2 + 3)  # W·r·(G + C)
    assert record["head_params"] > 0 and record["random_weights"] is True
    assert record["weights_source"] == "random"
    assert record["data"]["n_train"] > 0 and record["data"]["skipped"] == 0
    for key in ("lorsp", "torch", "timm", "python"):
        assert key in record["versions"]
    assert "git_commit" in record and record["device"] == "cpu" and record["timings"]["total_seconds"] > 0
    assert len(record["timings"]["epoch_seconds"]) == 2
    on_disk = json.loads((run_dir / "record.json").read_text())
    assert on_disk["final_accuracy"] == record["final_accuracy"] and on_disk["config"]["method"] == "lorsp"
    assert load_checkpoint(run_dir)["epoch"] == 2
    from safetensors.torch import load_file
    weights = load_file(run_dir / "prompt.safetensors")
    assert any(k.startswith("prompter.") for k in weights) and any(k.startswith("head.") for k in weights)
    assert sum(v.numel() for k, v in weights.items() if k.startswith("prompter.")) == record["prompt_params"]
    frame = results.load(tmp_path / "results")
    assert len(frame) == 1 and frame.loc[0, "method"] == "lorsp" and frame.loc[0, "groups"] == 2
    assert frame.loc[0, "final_accuracy"] == record["final_accuracy"]


def test_prompt_training_changes_the_prompt_with_progress_bars(tmp_path, capsys):
    # δ = 0 at init (B = 0); after training the prompter's basis has moved (the prompt is really trained)
    record = train(tiny_config(epochs=1, output=str(tmp_path)), progress=True)
    assert record["status"] == "completed"
    assert "epochs" in capsys.readouterr().err  # the tqdm bars went to stderr
    from safetensors.torch import load_file
    basis = [v for k, v in load_file(tmp_path / "prompt.safetensors").items() if k.startswith("prompter.")]
    assert any(float(v.abs().max()) > 0 for v in basis)


@pytest.mark.parametrize("head", ["ilm", "flm", "fullymap"])
def test_source_logit_heads_train_and_keep_their_label_mapping(tmp_path, head):
    config = tiny_config(method="pad", head=head, epochs=2, prompter_kwargs=dict(inner_size=24),
                         output=str(tmp_path))
    record = train(config, progress=False)
    assert record["status"] == "completed" and record["config"]["head"] == head
    state = load_checkpoint(tmp_path)["model"]
    if head in ("ilm", "flm"):
        mapping = state["head.mapping"]
        n = record["data"]["num_classes"]
        assert mapping.shape == (n,) and len(set(mapping.tolist())) == n  # one-to-one (Eq. of ILM-VP)
        assert int(state["head.updates"]) == (2 if head == "ilm" else 1)  # ILM each epoch, FLM once
    else:
        assert record["head_params"] == 1000 * record["data"]["num_classes"] + record["data"]["num_classes"]


def test_logit_subset_scoring(tmp_path):
    from lorsp.train import evaluate_run
    record = train(tiny_config(epochs=1, output=str(tmp_path)), progress=False)
    n = record["data"]["num_classes"]
    full = evaluate_run(tmp_path, device="cpu", progress=False)
    assert full["test_accuracy"] == pytest.approx(record["final_accuracy"])
    # labels are positions in the subset: the identity subset scores exactly like the full head ...
    same = evaluate_run(tmp_path, device="cpu", logit_indices=list(range(n)), progress=False)
    assert same["logit_subset"] == n and same["test_loss"] == pytest.approx(full["test_loss"])
    # ... and a reversed one reads the logits of other classes
    other = evaluate_run(tmp_path, device="cpu", logit_indices=list(range(n))[::-1], progress=False)
    assert other["test_loss"] != pytest.approx(full["test_loss"])


def test_lp_cached_features_match_training_through_the_backbone():
    cached = train(tiny_config(method="none", prompter_kwargs={}, deterministic=True), progress=False)
    direct = train(tiny_config(method="none", prompter_kwargs={}, deterministic=True, cache_features="off"),
                   progress=False)
    assert cached["features_cached"] is True and direct["features_cached"] is False
    assert cached["prompt_params"] == 0 and cached["firing_rate"] is None
    for a, b in zip(_metrics(cached), _metrics(direct)):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-5), (key, a[key], b[key])


# -- the decode-once device loader ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """``train/`` and ``test/`` of two classes, PNGs of several native sizes."""
    return helpers.write_image_folder(tmp_path_factory.mktemp("folder"))


def test_lp_seeds_on_the_same_images_share_one_feature_cache(tmp_path, image_folder, monkeypatch):
    from lorsp.engine import features
    extracted = []
    extract = features._extract_features
    monkeypatch.setattr(features, "_extract_features", lambda *a, **k: extracted.append(a[-1]) or extract(*a, **k))
    import timm
    from safetensors.torch import save_file
    weights = tmp_path / "tiny.safetensors"   # one backbone for every seed (random_init would draw one per seed)
    save_file(timm.create_model(helpers.TINY_BACKBONE, pretrained=False).state_dict(), str(weights))
    shared = tmp_path / "features"
    every_image = dict(dataset=f"folder:{image_folder}", method="none", prompter_kwargs={}, deterministic=True,
                       random_init=False, weights=str(weights),
                       train_per_class=6, test_per_class=3)   # all the folder has: every seed draws the same images
    first = train(tiny_config(seed=0, feature_cache_dir=str(shared), **every_image), progress=False)
    assert len(extracted) == 2 and len(list(shared.glob("*_train.pt"))) == len(list(shared.glob("*_test.pt"))) == 1
    second = train(tiny_config(seed=1, feature_cache_dir=str(shared), **every_image), progress=False)
    alone = train(tiny_config(seed=1, **every_image), progress=False)
    assert len(extracted) == 4   # the second run read both splits from the shared folder; the third computed them
    assert _metrics(second) == _metrics(alone) and _metrics(second) != _metrics(first)   # seed 1's own batches
    fewer = train(tiny_config(seed=1, feature_cache_dir=str(shared), **{**every_image, "train_per_class": 5}),
                  progress=False)   # other training images (5 of 6, drawn by the seed), the same test images
    assert extracted[4:] == ["features (train)"] and len(list(shared.glob("*_train.pt"))) == 2
    assert fewer["features_cached"]


def test_device_loader_trains_like_the_dataloader_and_resumes_across_loaders(tmp_path, image_folder):
    common = dict(dataset=f"folder:{image_folder}", train_per_class=None, test_per_class=None, epochs=3,
                  deterministic=True)
    plain = train(tiny_config(loader="dataloader", **common), progress=False)
    device = train(tiny_config(loader="device", **common), progress=False)
    assert plain["loader"] == "dataloader" and device["loader"] == "device"
    assert device["loader_decode_seconds"] >= 0
    for a, b in zip(_metrics(plain), _metrics(device)):  # the same batches, images equal to 1e-5
        for key in ("train_loss", "test_loss", "firing_rate"):
            assert math.isclose(a[key], b[key], rel_tol=1e-3, abs_tol=1e-4), (key, a[key], b[key])
    # an interrupted dataloader run resumes with the device loader (loader is free to change on resume)
    run_dir = tmp_path / "cut"
    with pytest.raises(InjectedFault):
        train(tiny_config(loader="dataloader", output=str(run_dir), fault_injection={"raise_after_epoch": 1},
                          **common), progress=False)
    resumed = train(tiny_config(loader="device", output=str(run_dir), resume=True, **common), progress=False)
    assert resumed["resumed_from_epoch"] == 1 and resumed["loader"] == "device"
    assert math.isclose(resumed["metrics"][-1]["train_loss"], plain["metrics"][-1]["train_loss"], rel_tol=1e-3)


def test_label_mapping_reads_the_decoded_images_too(image_folder):
    common = dict(dataset=f"folder:{image_folder}", train_per_class=None, test_per_class=None, method="pad",
                  head="ilm", prompter_kwargs=dict(inner_size=24), deterministic=True)
    plain = train(tiny_config(loader="dataloader", **common), progress=False)
    device = train(tiny_config(loader="device", **common), progress=False)
    for a, b in zip(_metrics(plain), _metrics(device)):
        for key in ("train_loss", "test_loss"):
            assert math.isclose(a[key], b[key], rel_tol=1e-3, abs_tol=1e-4), (key, a[key], b[key])


def test_loader_choice_and_the_datasets_it_refuses(image_folder, monkeypatch):
    import numpy as np

    from lorsp.data import build_dataset
    from lorsp.engine import loaders
    from lorsp.data.gpu_pipeline import ImageBank
    from lorsp.data.images import ArrayDataset
    from lorsp.shifts import ShiftedDataset

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device object needs no GPU
    files = build_dataset(f"folder:{image_folder}", split="train", image_size=16)
    arrays = ArrayDataset(np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 0, 1], ["a", "b"], image_size=16)
    synthetic = build_dataset("synthetic", split="train", image_size=16, per_class=1)
    assert ImageBank.estimate_nbytes(arrays) == 4 * 8 * 8 * 3
    assert ImageBank.estimate_nbytes(files) == pytest.approx(ImageBank.from_dataset(files).nbytes, rel=0.01)
    assert ImageBank.estimate_nbytes(synthetic) is None
    assert choose_loader("auto", cpu, files, files) == "device"  # decoded once on a CPU too (issue 24)
    assert choose_loader("auto", cuda, files, arrays) == "device"
    assert choose_loader("device", cpu, files, files) == "device"
    assert choose_loader("dataloader", cuda, files, files) == "dataloader"
    assert choose_loader("auto", cuda, synthetic, synthetic) == "dataloader"  # made on access
    monkeypatch.setattr(loaders, "DEVICE_LOADER_AUTO_MAX_BYTES", 100)  # too big to decode once
    assert choose_loader("auto", cuda, files, arrays) == "dataloader"
    assert choose_loader("auto", cpu, files, arrays) == "dataloader"
    with pytest.raises(ValueError, match="SyntheticDataset.*dataloader"):
        choose_loader("device", cpu, files, synthetic)
    with pytest.raises(ValueError, match="ShiftedDataset"):
        choose_loader("device", cpu, ShiftedDataset(files, "gaussian noise"), files)
    with pytest.raises(ValueError, match="loader must be one of"):
        choose_loader("gpu", cpu, files, files)


def test_interrupted_run_resumes_to_the_uninterrupted_metrics(tmp_path):
    full = train(tiny_config(epochs=3, deterministic=True, output=str(tmp_path / "full")), progress=False)
    run_dir = tmp_path / "cut"
    with pytest.raises(InjectedFault):
        train(tiny_config(epochs=3, deterministic=True, output=str(run_dir),
                          fault_injection={"raise_after_epoch": 1}), progress=False)
    assert load_checkpoint(run_dir)["epoch"] == 1 and not (run_dir / "record.json").exists()
    with pytest.raises(ValueError, match="--resume"):  # a second start without --resume is refused
        train(tiny_config(epochs=3, deterministic=True, output=str(run_dir)), progress=False)
    resumed = train(tiny_config(epochs=3, deterministic=True, output=str(run_dir), resume=True), progress=False)
    assert resumed["resumed_from_epoch"] == 1 and resumed["status"] == "completed"
    assert _metrics(resumed) == _metrics(full)
    assert resumed["final_accuracy"] == full["final_accuracy"]


def test_eval_every_evaluates_every_nth_and_the_last_epoch_and_resumes_exactly(tmp_path):
    every = train(tiny_config(epochs=3, eval_every=2, deterministic=True), progress=False)
    assert every["evaluated_epochs"] == [2, 3] and every["eval_batch_size"] == 16  # twice the batch of 8
    assert "test_accuracy" not in every["metrics"][0] and "test_loss" not in every["metrics"][0]
    assert every["final_accuracy"] == every["metrics"][-1]["test_accuracy"]
    always = train(tiny_config(epochs=3, deterministic=True, eval_batch_size=8), progress=False)
    assert always["evaluated_epochs"] == [1, 2, 3]
    # evaluating (or not, at any batch) changes nothing of the training; the evaluations agree
    train_keys = ("train_loss", "train_accuracy", "lr", "train_steps")
    assert [[row[k] for k in train_keys] for row in every["metrics"]] == \
        [[row[k] for k in train_keys] for row in always["metrics"]]
    assert every["final_accuracy"] == always["final_accuracy"]
    assert every["final_test_loss"] == pytest.approx(always["final_test_loss"], rel=1e-5)
    # eval_every may change on resumption (a resume-free field): the training stays exact
    run_dir = tmp_path / "cut"
    with pytest.raises(InjectedFault):
        train(tiny_config(epochs=3, eval_every=2, deterministic=True, output=str(run_dir),
                          fault_injection={"raise_after_epoch": 1}), progress=False)
    resumed = train(tiny_config(epochs=3, eval_every=1, deterministic=True, output=str(run_dir), resume=True),
                    progress=False)
    assert resumed["evaluated_epochs"] == [2, 3] and _metrics(resumed) == _metrics(every)


def test_loss_trace_and_max_steps_rerun_the_first_steps_exactly(tmp_path):
    losses = []
    full = train(tiny_config(epochs=2, trace_steps=7, deterministic=True),
                 on_batch_end=lambda epoch, step, loss: losses.append(loss), progress=False)
    steps = full["steps_per_epoch"]  # 40 train images / batch 8: 5 steps per epoch
    assert full["steps_completed"] == 2 * steps == len(losses) and 2 * steps > 7
    assert full["loss_trace"] == losses[:7]
    first = train(tiny_config(epochs=2, trace_steps=7, deterministic=True, max_steps=steps + 1,
                              output=str(tmp_path)), progress=False)
    assert first["status"] == "completed" and first["stopped_at_max_steps"]
    assert first["steps_completed"] == steps + 1 and [row["train_steps"] for row in first["metrics"]] == [steps, 1]
    assert first["evaluated_epochs"] == [1, 2] and first["final_accuracy"] is not None
    assert first["loss_trace"] == full["loss_trace"][:steps + 1]  # the same steps, the same losses
    assert first["metrics"][0]["lr"] == full["metrics"][0]["lr"]  # the schedule is the whole run's
    assert load_checkpoint(tmp_path)["epoch"] == 1  # the cut epoch is not checkpointed as complete
    no_trace = train(tiny_config(epochs=1, trace_steps=0), progress=False)
    assert no_trace["loss_trace"] == []


@pytest.mark.parametrize("method, kwargs", [("lorsp", dict(groups=2, rank=2)), ("evp", dict(pad_size=4))])
def test_prompt_lr_trains_the_prompt_at_its_own_rate_and_the_head_at_lr(tmp_path, method, kwargs):
    from safetensors.torch import load_file

    def run(name, **overrides):
        record = train(tiny_config(method=method, prompter_kwargs=kwargs, epochs=1, trace_steps=5,
                                   deterministic=True, output=str(tmp_path / name), **overrides), progress=False)
        weights = load_file(tmp_path / name / "prompt.safetensors")
        prompt = torch.cat([v.flatten() for k, v in sorted(weights.items()) if k.startswith("prompter.")])
        head = torch.cat([v.flatten() for k, v in sorted(weights.items()) if k.startswith("head.")])
        return record, prompt, head

    paper, paper_prompt, paper_head = run("paper")
    equal, equal_prompt, _ = run("equal", prompt_lr=0.05)  # prompt_lr = lr: the paper's run again
    assert equal["loss_trace"] == pytest.approx(paper["loss_trace"], rel=1e-6)
    assert torch.allclose(equal_prompt, paper_prompt, atol=1e-7)
    tiny, tiny_prompt, tiny_head = run("tiny", prompt_lr=1e-9)  # the prompt all but frozen, the head not
    assert tiny["config"]["prompt_lr"] == 1e-9 and paper["config"]["prompt_lr"] is None
    initial = run("initial", max_steps=1, lr=1e-9)[1]  # the prompt's start (one step at a negligible lr)
    assert torch.allclose(tiny_prompt, initial, atol=1e-6)
    assert not torch.allclose(paper_prompt, initial, atol=1e-6)  # at lr the prompt moves
    assert not torch.allclose(tiny_head, run("frozen", lr=1e-9)[2], atol=1e-6)  # the head still trains at lr


def test_prompt_lr_splits_prompt_and_head_into_groups():
    from torch import nn
    from lorsp.engine import build_optimizer

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.prompter, self.head = nn.Linear(2, 2), nn.Linear(2, 3)

    model = Model()
    params = list(model.prompter.parameters()) + list(model.head.parameters())
    one = build_optimizer(tiny_config(), model, params)
    assert len(one.param_groups) == 1 and one.param_groups[0]["lr"] == 0.05
    two = build_optimizer(tiny_config(prompt_lr=0.5), model, params)
    lrs = {group["name"]: (group["lr"], [id(p) for p in group["params"]]) for group in two.param_groups}
    assert lrs["prompt"] == (0.5, [id(p) for p in model.prompter.parameters()])
    assert lrs["head"] == (0.05, [id(p) for p in model.head.parameters()])


def test_a_checkpoint_older_than_new_config_fields_resumes(tmp_path):
    with pytest.raises(InjectedFault):
        train(tiny_config(output=str(tmp_path), fault_injection={"raise_after_epoch": 1}), progress=False)
    from lorsp.checkpoint import save_checkpoint
    checkpoint = load_checkpoint(tmp_path)
    for key in ("eval_every", "eval_batch_size", "max_steps", "trace_steps", "prompt_lr"):
        checkpoint["config"].pop(key)
    for key in ("steps_completed", "loss_trace"):
        checkpoint.pop(key)
    save_checkpoint(tmp_path, checkpoint)
    with pytest.raises(ValueError, match="trace_steps"):  # a new field at another value than its default
        train(tiny_config(output=str(tmp_path), resume=True, trace_steps=3), progress=False)
    resumed = train(tiny_config(output=str(tmp_path), resume=True), progress=False)
    assert resumed["status"] == "completed" and resumed["steps_completed"] == 2 * resumed["steps_per_epoch"]


def test_resume_refuses_another_config(tmp_path):
    with pytest.raises(InjectedFault):
        train(tiny_config(output=str(tmp_path), fault_injection={"raise_after_epoch": 1}), progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(tiny_config(output=str(tmp_path), resume=True, lr=0.5), progress=False)


def test_nonfinite_loss_stops_keeps_last_good_checkpoint_and_records_failure(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(DivergenceError, match="non-finite training loss.*epoch 2"):
        train(tiny_config(epochs=3, output=str(run_dir), fault_injection={"nonfinite_loss_at": [2, 0]}),
              progress=False)
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "failed" and "DivergenceError" in record["reason"]
    assert record["epochs_completed"] == 1 and record["final_accuracy"] is not None


def test_divergence_from_a_huge_learning_rate_is_caught():
    with pytest.raises(DivergenceError):
        train(tiny_config(epochs=3, lr=100.0, momentum=0.0, prompter_kwargs=dict(groups=2, rank=2, init_std=1e3)),
              progress=False)


# -- records ------------------------------------------------------------------------------------------------
def _fake_record(i):
    return {"config": {"backbone": "b", "dataset": "d", "method": "lorsp", "seed": i,
                       "prompter_kwargs": {"groups": 4, "rank": 4}},
            "status": "completed", "final_accuracy": i / 10, "best_accuracy": i / 10,
            "data": {"dataset": "d", "n_train": 10, "n_test": 5, "skipped": 0},
            "metrics": [{"epoch": 1, "test_accuracy": i / 10}], "nan": float("nan")}


def test_concurrent_record_writes_lose_nothing_and_load_into_a_frame(tmp_path):
    threads = [threading.Thread(target=results.write_record, args=(_fake_record(i), tmp_path)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(tmp_path.glob("*.json"))) == 8 and not list(tmp_path.glob(".*"))
    frame = results.load(tmp_path)
    assert sorted(frame["seed"]) == list(range(8)) and set(frame["rank"]) == {4}
    assert frame["nan"].isna().all()  # non-finite floats are written as null
    per_epoch = results.load(tmp_path, with_epochs=True)
    assert len(per_epoch) == 8 and "test_accuracy" in per_epoch.columns
    (tmp_path / "other.json").write_text("[1, 2]")
    assert len(results.load(tmp_path)) == 8  # non-records in a folder are skipped
    with pytest.raises(ValueError, match="other.json"):
        results.load(tmp_path / "other.json")


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr("lorsp.checkpoint.os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# -- real data: CIFAR-10 with the offline MobileNetV2 weights ------------------------------------------------
def _real_cifar_available():
    from lorsp.data import data_root, dataset_location
    root = Path(data_root())
    if dataset_location("cifar10", root) is None:
        return f"no CIFAR-10 in the data root {root} (cifar10/train and test, or cifar-10-batches-py)"
    if not (root / "weights" / "mobilenetv2_100_tflite_in1k.safetensors").is_file():
        return f"no MobileNetV2 weights in {root / 'weights'}"
    return None


@pytest.mark.parametrize("method, kwargs", [("none", {}), ("lorsp", {"groups": 4, "rank": 4})])
def test_cifar10_mobilenetv2_lp_and_lorsp_clearly_above_chance(tmp_path, method, kwargs):
    reason = _real_cifar_available()
    if reason:
        pytest.skip(reason)
    start = time.perf_counter()
    record = train(TrainConfig(backbone="mobilenetv2", dataset="cifar10", method=method, prompter_kwargs=kwargs,
                               epochs=2, batch_size=40, lr=0.02, image_size=64, train_per_class=20,
                               test_per_class=10, device="cpu", output=str(tmp_path / method)), progress=False)
    seconds = time.perf_counter() - start
    assert record["status"] == "completed" and record["weights_source"] != "random"
    assert record["data"]["n_train"] == 200 and record["data"]["n_test"] == 100
    # chance is 10 %; 100 test images: 25 % is far outside chance's spread (sd 3 %). Measured with these
    # settings (epochs 1, 2, 3): LP 0.35, 0.48, 0.49; LoRSP 0.42, 0.52, 0.49 (lr 0.1 makes LoRSP's prompt
    # collapse to chance at epoch 2).
    assert record["final_accuracy"] >= 0.25, record["metrics"]
    assert (tmp_path / method / "record.json").is_file()
    assert seconds < 180, f"smoke run took {seconds:.0f} s"  # ~5 s (LP) and ~15 s (LoRSP) on 2 free cores


def test_git_commit_is_dirty_for_code_changes_but_not_for_run_records(tmp_path):
    import subprocess
    from lorsp.results import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "desk").mkdir(parents=True)
    (tmp_path / "results" / "desk" / "record.json").write_text("{}\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    clean = git_commit(tmp_path)
    assert clean and len(clean) == 40
    (tmp_path / "results" / "desk" / "record.json").write_text('{"new": 1}\n')  # a runner wrote a record
    assert git_commit(tmp_path / "results") == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "results") == clean + "-dirty"
