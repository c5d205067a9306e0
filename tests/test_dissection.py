"""The committed LoRSP record that the method chapter `prompt_factorisation` dissects (lorsp.experiments.dissection):
which record is found, how its prompter is rebuilt, the fallback when there is none, and the errors."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import lorsp.experiments as ex
from lorsp.prompters import build_prompter


def _candidate_key(scale: str, seed: int = 0) -> str:
    return next(ex.run_key(r) for r in ex.dissection_candidates(scale) if r["seed"] == seed)


def _write_record(folder, groups=2, rank=2, image_size=32, status="completed", accuracy=0.125, seed=0, **overrides):
    """A results folder as the runner writes it: record.json with the run's TrainConfig, and prompt.safetensors
    written by the trainer's own lorsp.train.save_prompt_weights (prompter.* and head.* tensors). Returns the
    prompter whose weights were saved (non-zero P and B)."""
    from lorsp.train import TrainConfig, save_prompt_weights
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(backbone="resnet10t", dataset="synthetic", method="lorsp", epochs=1, batch_size=8,
                         image_size=image_size, train_per_class=4, test_per_class=2, seed=seed, random_init=True,
                         prompter_kwargs=dict(groups=groups, rank=rank, tau=4.0, v_threshold=0.0))
    prompter = build_prompter("lorsp", image_size=image_size, groups=groups, rank=rank)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in prompter.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model = nn.Module()
    model.prompter, model.head = prompter, nn.Linear(8, 10)
    save_prompt_weights(model, folder / "prompt.safetensors", config)
    record = {"status": status, "reason": "DivergenceError: loss nan" if status == "failed" else None,
              "config": config.to_dict(), "git_commit": "0123456789abcdef0123", "final_accuracy": accuracy,
              "data": {"dataset": "synthetic", "n_train": 40, "n_test": 20, "num_classes": 10},
              "epochs_completed": 1, "steps_completed": 5, "random_weights": True, "firing_rate": 0.361,
              "sparsity": 0.248,
              "experiment": {"key": folder.name, "wall_seconds": 90.0}}
    record.update(overrides)
    (folder / "record.json").write_text(json.dumps(record))
    return prompter


# --- which record ----------------------------------------------------------------------------------------------
def test_finds_the_desk_lorsp_record_and_prefers_the_largest_scale(tmp_path, monkeypatch):
    monkeypatch.setenv("LORSP_DESK_PROTOCOL", "v1")   # v1's run keys, pinned here; v2's chooser is the same code
    assert [r["tags"]["label"] for r in ex.dissection_candidates("desk")] == ["LoRSP"] * 5
    desk = tmp_path / "desk" / _candidate_key("desk")
    assert desk.name == "cifar10-mobilenetv2-lorsp-s0-21f997d495cc"   # the desk LoRSP CIFAR-10 seed-0 run
    _write_record(desk)
    search = ex.find_dissection_record(tmp_path)
    assert search.found and search.scale == "desk" and search.record_dir == desk and search.reason == ""
    mini = tmp_path / "mini" / _candidate_key("mini")
    _write_record(mini)
    search = ex.find_dissection_record(tmp_path)
    assert search.scale == "mini" and search.record_dir == mini
    assert "`paper`: none of its" in search.looked[0]


def test_lowest_seed_first_and_diverged_records_passed_over(tmp_path):
    _write_record(tmp_path / "desk" / _candidate_key("desk", 2), seed=2)
    _write_record(tmp_path / "desk" / _candidate_key("desk", 1), seed=1)
    assert ex.find_dissection_record(tmp_path).record_dir.name == _candidate_key("desk", 1)
    _write_record(tmp_path / "desk" / _candidate_key("desk", 0), status="failed")
    assert ex.find_dissection_record(tmp_path).record_dir.name == _candidate_key("desk", 1)
    for seed in (1, 2):
        (tmp_path / "desk" / _candidate_key("desk", seed) / "record.json").unlink()
    search = ex.find_dissection_record(tmp_path)
    assert not search.found and "only diverged LoRSP records" in search.reason
    assert _candidate_key("desk", 0) in search.reason


def test_no_record_falls_back_and_the_banner_says_why(tmp_path):
    search = ex.find_dissection_record(tmp_path)
    assert not search.found and search.record_dir is None
    assert search.reason.startswith("no committed LoRSP record to dissect")
    assert all(f"`{scale}`" in search.reason for scale in ("paper", "mini", "desk"))
    subject = ex.dissection_subject(results_root=tmp_path, scale="smoke", data_root=tmp_path / "no-data",
                                    fallback_roots=[tmp_path / "no-runs"])
    assert subject.dissected is None and not subject.trained and subject.scale == "smoke"
    assert "NOT trained" in subject.what and "untrained" in subject.facts["prompt weights"]
    assert any("no committed LoRSP record to dissect" in text for text in subject.facts["fallbacks"])
    assert subject.samples.synthetic and any("synthetic images" in text for text in subject.facts["fallbacks"])
    assert "Scale: `smoke`" in str(subject.banner())


def test_fallback_uses_a_trained_prompt_it_finds(tmp_path):
    saved = _write_record(tmp_path / "runs" / "smoke" / "some-run", groups=4, rank=4, image_size=64)
    subject = ex.dissection_subject(results_root=tmp_path / "results", scale="smoke", data_root=tmp_path,
                                    fallback_roots=[tmp_path / "runs" / "smoke"])
    assert subject.trained and subject.dissected is None
    assert torch.equal(subject.prompter.factors.basis, saved.factors.basis)
    assert any("dissects a trained prompt it found instead" in text for text in subject.facts["fallbacks"])


# --- the dissected prompt ----------------------------------------------------------------------------------------
def test_rebuilds_the_trained_prompter_and_states_the_record(tmp_path):
    folder = tmp_path / "desk" / _candidate_key("desk")
    saved = _write_record(folder)
    subject = ex.dissection_subject(results_root=tmp_path, scale="smoke", n_images=6)
    dissected = subject.dissected
    assert subject.trained and subject.scale == "desk" and dissected.key == folder.name
    for name, value in saved.state_dict().items():
        assert torch.equal(dissected.prompter.state_dict()[name], value), name
    assert (dissected.prompter.groups, dissected.prompter.rank, dissected.prompter.image_size) == (2, 2, (32, 32))
    assert dissected.prompter.lif.tau == 4.0 and not dissected.prompter.training
    images = torch.rand(3, 3, 32, 32)
    assert torch.equal(dissected.prompter.prompt(images), saved.eval().prompt(images))
    facts = subject.facts
    assert folder.name in facts["record"] and facts["seed"] == 0 and facts["resolution"] == "32×32 px"
    assert facts["test accuracy"].startswith("12.50%") and "0123456789ab" in facts["trained by"]
    assert "4 train / 2 test images per class" in facts["data"] and "RANDOM INIT" in facts["backbone"]
    assert facts["epochs"].startswith("1 of 1 (5 optimisation steps")
    assert facts["fallbacks"] == ["the record was trained, and is shown, on lorsp's procedural synthetic dataset, "
                                  "not on real images"]
    assert dissected.recorded_sentence() == ("Over its 20 test images, the run's record measured 36.1% of the "
                                             "neurons firing and 24.8% of δ's entries exactly zero (after the last epoch).")
    dissected.record["git_commit"] += "-dirty"
    assert "0123456789ab with uncommitted changes (-dirty)" in dissected.facts()["trained by"]
    dissected.record.pop("firing_rate")
    assert dissected.recorded_sentence().endswith("measured 24.8% of δ's entries exactly zero (after the last epoch).")
    banner = str(subject.banner())
    assert "Scale: `desk`" in banner and folder.name in banner
    # the run's own test images (synthetic here: no data needed), one per class, at the record's resolution
    assert tuple(subject.samples.images.shape) == (6, 3, 32, 32) and len(set(subject.samples.names)) == 6
    assert "record's own test set" in subject.samples.note


def test_images_fall_back_to_samples_when_the_data_root_lacks_the_dataset(tmp_path):
    folder = tmp_path / "desk" / _candidate_key("desk")
    _write_record(folder)
    record = json.loads((folder / "record.json").read_text())
    record["config"]["dataset"] = "cifar10"
    (folder / "record.json").write_text(json.dumps(record))
    dissected = ex.load_dissected_prompt(folder)
    shown = ex.dissection_images(dissected, n=3, root=tmp_path / "empty")
    assert tuple(shown.images.shape[-2:]) == (32, 32) and "not the record's own cifar10 test images" in shown.note
    assert "lorsp data import" in shown.note and str(tmp_path) not in shown.note  # no path of this machine


# --- errors name the file and the key ----------------------------------------------------------------------------
def test_missing_prompt_file_is_named(tmp_path):
    folder = tmp_path / "desk" / "run"
    _write_record(folder)
    (folder / "prompt.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"run/prompt\.safetensors is missing"):
        ex.load_dissected_prompt(folder)


@pytest.mark.parametrize("change, message", [
    (lambda r: r["config"]["prompter_kwargs"].update(gruops=4), r"record\.json: config\.prompter_kwargs .*gruops"),
    (lambda r: r["config"]["prompter_kwargs"].update(groups=0), r"record\.json: config\.prompter_kwargs .*groups"),
    (lambda r: r["config"].update(method="lorvp"), r"record\.json: config\.method is 'lorvp'"),
    (lambda r: r["config"].update(colour="red"), r"record\.json: 'config' is not a TrainConfig.*colour"),
    (lambda r: r.pop("config"), r"record\.json has no 'config'"),
    (lambda r: r["config"]["prompter_kwargs"].update(rank=3),
     r"prompt\.safetensors: prompter\.factors\.\w+ has shape .* expects"),
])
def test_a_config_that_does_not_rebuild_is_named(tmp_path, change, message):
    folder = tmp_path / "run"
    _write_record(folder)
    record = json.loads((folder / "record.json").read_text())
    change(record)
    (folder / "record.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message):
        ex.load_dissected_prompt(folder)


def test_weights_without_a_prompter_tensor_are_named(tmp_path):
    from safetensors.torch import load_file, save_file
    folder = tmp_path / "run"
    _write_record(folder)
    tensors = load_file(str(folder / "prompt.safetensors"))
    del tensors["prompter.factors.basis"]
    save_file(tensors, str(folder / "prompt.safetensors"))
    with pytest.raises(ValueError, match=r"prompt\.safetensors: no tensor prompter\.factors\.basis"):
        ex.load_dissected_prompt(folder)
    (folder / "prompt.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"prompt\.safetensors is not a readable safetensors file"):
        ex.load_dissected_prompt(folder)


# --- what the chapter says is what it measures --------------------------------------------------------------------
def test_measurements_and_sentences_state_the_measured_numbers():
    from lorsp import viz
    prompter, _ = viz.display_prompter(image_size=16, groups=3, rank=2, seed=0)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    m = ex.prompt_measurements(prompter, images)
    explanation = prompter.explain(images)
    assert m["images"] == 4 and m["groups"] == 3
    assert m["factor_std"] == pytest.approx(float(explanation.factors.double().std()))
    assert m["firing_rate"] == pytest.approx(float(explanation.firing_rate.double().mean()))
    assert m["sparsity"] == pytest.approx(float(explanation.sparsity.double().mean()))
    corr = viz.factor_correlation(explanation.factors)
    off = [corr[i, j] for i in range(3) for j in range(3) if i != j]
    assert m["correlation_mean"] == pytest.approx(sum(off) / len(off))
    assert m["correlation_max"] == pytest.approx(max(off)) and m["correlation_undefined"] == 0
    assert m["correlation_abs_mean"] == pytest.approx(sum(abs(v) for v in off) / len(off))
    text = " ".join(ex.measured_sentences(m, "this prompt"))
    for number in (f"{m['factor_std']:.3g}", f"{100 * m['firing_rate']:.1f}%", f"{100 * m['sparsity']:.1f}%",
                   f"{m['correlation_mean']:.2f}", f"{m['correlation_min']:.2f}", f"{m['correlation_max']:.2f}",
                   f"{m['correlation_abs_mean']:.2f}"):
        assert number in text, number
    silent = viz.with_lif_settings(prompter, tau=4.0, v_threshold=1e9, v_reset=0.0)      # no neuron fires
    m = ex.prompt_measurements(silent, images)
    assert m["firing_rate"] == 0.0 and m["sparsity"] == 1.0
    assert "0.0% of the neurons fire" in " ".join(ex.measured_sentences(m, "x"))
    with torch.no_grad():
        prompter.factors.basis.zero_()                                                    # LoRSP's own init
    m = ex.prompt_measurements(prompter, images)
    text = " ".join(ex.measured_sentences(m, "x"))
    assert m["factor_std"] == 0.0 and "exactly zero" in text and "pairwise correlations" not in text
