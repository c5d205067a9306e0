"""A fresh clone with an empty data root (no images, no backbone weights, no network): the chapters that read
committed records show what the records hold, say what they could not recompute and how to get it, and never
raise (issue 24, item 2). The data root is an empty ``tmp_path`` here; ``LORSP_OFFLINE=1`` comes from conftest.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import lorsp.experiments as ex
from lorsp.experiments import gallery as fig5
from lorsp.prompters import build_prompter

IMAGE_SIZE = 16


@pytest.fixture
def empty_data_root(tmp_path, monkeypatch):
    root = tmp_path / "empty-data-root"
    root.mkdir()
    monkeypatch.setenv("LORSP_DATA", str(root))
    return root


def _write_gallery_records(results_dir, dataset: str) -> dict[str, nn.Module]:
    """The desk gallery's two runs (LoR-VP, LoRSP) as the runner commits them: record.json with a TrainConfig
    that needs MobileNetV2's pretrained weights, and prompt.safetensors written by the trainer's own
    lorsp.train.save_prompt_weights. Returns the saved prompters by label (non-zero weights)."""
    from lorsp.train import TrainConfig, save_prompt_weights
    saved = {}
    generator = torch.Generator().manual_seed(3)
    for run in ex.grid("prompt_gallery", "desk"):
        label, method = run["tags"]["label"], run["method"]
        options = dict(groups=4, rank=2, tau=4.0, v_threshold=0.0) if method == "lorsp" else dict(rank=2)
        config = TrainConfig(backbone="mobilenetv2", dataset=dataset, method=method, epochs=1, batch_size=8,
                             image_size=IMAGE_SIZE, train_per_class=4, test_per_class=2, seed=run["seed"],
                             random_init=False, prompter_kwargs=options)
        prompter = build_prompter(method, image_size=IMAGE_SIZE, **options)
        with torch.no_grad():
            for parameter in prompter.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
        model = nn.Module()
        model.prompter, model.head = prompter, nn.Linear(8, 10)
        folder = results_dir / ex.run_key(run)
        folder.mkdir(parents=True)
        save_prompt_weights(model, folder / "prompt.safetensors", config)
        record = {"status": "completed", "config": config.to_dict(), "final_accuracy": 0.25,
                  "firing_rate": 0.361 if method == "lorsp" else None, "sparsity": 0.248 if method == "lorsp" else 0.0,
                  "data": {"dataset": dataset, "num_classes": 10}, "experiment": {"key": folder.name}}
        (folder / "record.json").write_text(json.dumps(record))
        saved[label] = prompter.eval()
    return saved


def test_gallery_without_the_images_shows_the_records_and_says_what_is_missing(tmp_path, empty_data_root):
    results = tmp_path / "results" / "desk"
    saved = _write_gallery_records(results, "tiny-imagenet")
    gallery = ex.prompt_gallery(ex.grid("prompt_gallery", "desk"), results, n_images=3)   # never raises
    assert not gallery.recomputed and gallery.panels == {}
    note = gallery.note()
    assert note.startswith("**Not recomputed") and "no tiny-imagenet images" in note
    assert "`lorsp data import PATH`" in note and str(empty_data_root) not in note   # no machine path
    assert "a network" not in note          # torchvision cannot download Tiny-ImageNet
    recorded = gallery.recorded.set_index("method")
    assert recorded.loc["LoRSP", "mean firing rate (%)"] == pytest.approx(36.1)
    assert recorded.loc["LoRSP", "zeros in δ (%)"] == pytest.approx(24.8)
    torch.testing.assert_close(gallery.shared_prompts["LoR-VP"], saved["LoR-VP"].shared_prompt().detach())
    claims = ex.gallery_claims(gallery, scale="desk")
    assert any("24.8% of its prompt entries exactly zero" in c and "36.1%" in c for c in claims)
    assert "not recomputed" in claims[-1] and "lorsp data import" in claims[-1]
    assert fig5.plot_gallery(gallery) is not None          # LoR-VP's shared prompt, from its weights
    assert fig5.plot_firing_rates(gallery) is None
    assert fig5.gallery_summary(gallery).equals(gallery.recorded)


def test_gallery_with_the_images_needs_no_backbone_weights(tmp_path, empty_data_root):
    """δ(x) is computed before the backbone: the synthetic test images are enough, MobileNetV2's weights (absent
    here) are not needed, and the prompts are the saved prompters' own."""
    results = tmp_path / "results" / "desk"
    saved = _write_gallery_records(results, "synthetic")
    gallery = ex.prompt_gallery(ex.grid("prompt_gallery", "desk"), results, n_images=3)
    assert gallery.recomputed and set(gallery.panels) == {"LoR-VP", "LoRSP"} and "synthetic" in gallery.note()
    with torch.no_grad():
        expected = saved["LoRSP"].explain(gallery.images).prompt
    torch.testing.assert_close(gallery.panels["LoRSP"].prompts, expected)
    assert gallery.panels["LoR-VP"].varying_share == 0.0
    assert fig5.plot_gallery(gallery) is not None and fig5.plot_firing_rates(gallery) is not None


def test_missing_images_sentence_names_a_network_only_where_torchvision_downloads(empty_data_root):
    assert "a network" in fig5.missing_images_sentence("cifar10")
    sentence = fig5.missing_images_sentence("tiny-imagenet")
    assert "a network" not in sentence and "no tiny-imagenet images" in sentence


def test_a_prompt_file_that_does_not_fit_the_config_is_named(tmp_path, empty_data_root):
    results = tmp_path / "results" / "desk"
    _write_gallery_records(results, "tiny-imagenet")
    run = next(r for r in ex.grid("prompt_gallery", "desk") if r["method"] == "lorsp")
    path = results / ex.run_key(run) / "record.json"
    record = json.loads(path.read_text())
    record["config"]["prompter_kwargs"]["rank"] = 3
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="prompt.safetensors"):
        fig5.load_run_prompter(run, results)
