"""Records name their inputs so that anyone can check them: data fingerprints, no machine path, `lorsp data verify`."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lorsp.cli import main as cli
from lorsp.data import build_dataset
from lorsp.data.provenance import data_provenance, portable_record, verify_records

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_like(root, per_class=2, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for name in CLASSES:
            folder = root / "cifar10" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return root


def _fingerprint(root, split="train"):
    return data_provenance(build_dataset("cifar10", split=split, image_size=8, root=root, per_class=2), root)


def test_the_fingerprint_names_the_images_not_the_folder_they_live_in(tmp_path):
    first = _cifar_like(tmp_path / "a")
    second = tmp_path / "elsewhere" / "b"
    shutil.copytree(first, second)
    a, b = _fingerprint(first), _fingerprint(second)
    assert a == b and a["location"] == "cifar10/train" and a["images"] == 20 and len(a["sha256"]) == 64
    assert str(tmp_path) not in json.dumps(a)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(second / "cifar10" / "train" / "cat" / "0001.png")
    assert _fingerprint(second)["sha256"] != a["sha256"]      # one changed image changes it


def test_a_results_record_holds_no_machine_path():
    record = {"run_dir": "/work/x/run", "record_path": "/work/x/run/record.json", "weights_source": "file:w.pth",
              "config": {"output": "/work/x/run", "feature_cache_dir": "/work/x/cache", "data_root": "/data",
                         "results_dir": "/r", "lr": 0.01},
              "data": {"path": "/work/data/cifar10/train", "n_train": 5}}
    out = portable_record(record)
    assert "/work" not in json.dumps(out) and "/data" not in json.dumps(out) and "/r" not in json.dumps(out)
    assert out["config"]["lr"] == 0.01 and out["data"] == {"n_train": 5} and out["weights_source"] == "file:w.pth"


def test_no_committed_record_holds_a_machine_path():
    from lorsp.experiments.grid import results_root

    files = sorted(results_root().glob("*/*/record.json"))
    assert files, f"no committed records under {results_root()}"
    for file in files:
        text = file.read_text()
        for marker in ('"/work', '"/tmp', '"/home', '"/root', '"file:/'):
            assert marker not in text, f"{file} holds a machine path ({marker}…)"


def _record(folder, root, **extra):
    train, test = _fingerprint(root, "train"), _fingerprint(root, "test")
    record = {"config": {"dataset": "cifar10", "image_size": 8, "seed": 0, "train_per_class": 2,
                         "test_per_class": 2}, "weights_source": "random",
              "data": {"provenance": {"train": train, "test": test}}, **extra}
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(record))
    return folder / "record.json"


def test_verify_says_ok_differs_and_missing(tmp_path, capsys):
    root = _cifar_like(tmp_path / "root")
    file = _record(tmp_path / "results" / "run-a", root)
    assert {r["status"] for r in verify_records([file], root)} == {"ok"}
    assert cli(["data", "verify", str(tmp_path / "results"), "--root", str(root)]) == 0
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "cifar10" / "test" / "dog" / "0000.png")
    rows = {r["input"]: r for r in verify_records([file], root)}
    assert rows["train images"]["status"] == "ok" and rows["test images"]["status"] == "differs"
    assert cli(["data", "verify", str(tmp_path / "results"), "--root", str(root)]) == 1
    rows = {r["input"]: r for r in verify_records([file], tmp_path / "empty")}
    assert rows["train images"]["status"] == "missing" and "cifar10" in rows["train images"]["note"]
    assert "1 differs" in capsys.readouterr().out


def test_verify_rebuilds_the_training_subset_and_the_validation_split_the_engine_carved(tmp_path):
    """A run with ``val_per_class`` (desk v2) trains on the rest of a ``train + val`` draw: verify rebuilds both
    splits as the engine does (``lorsp.train.build_datasets``), not the plain ``train_per_class`` draw."""
    from lorsp.engine.building import build_datasets
    from lorsp.engine.config import TrainConfig
    root = _cifar_like(tmp_path / "root", per_class=4)
    config = TrainConfig(dataset="cifar10", image_size=8, seed=3, train_per_class=2, val_per_class=1,
                         test_per_class=2, data_root=str(root))
    train, val, test = build_datasets(config, with_val=True)
    plain = data_provenance(build_dataset("cifar10", split="train", image_size=8, root=root, per_class=2, seed=3), root)
    record = {"config": {"dataset": "cifar10", "image_size": 8, "seed": 3, "train_per_class": 2, "val_per_class": 1,
                         "test_per_class": 2}, "weights_source": "random",
              "data": {"provenance": {s: data_provenance(d, root) for s, d in
                                      (("train", train), ("val", val), ("test", test))}}}
    assert record["data"]["provenance"]["train"]["sha256"] != plain["sha256"]   # the carve changes the subset
    file = tmp_path / "results" / "run-v" / "record.json"
    file.parent.mkdir(parents=True)
    file.write_text(json.dumps(record))
    rows = {r["input"]: r["status"] for r in verify_records([file], root)}
    assert rows == {"weights": "ok", "train images": "ok", "val images": "ok", "test images": "ok"}, rows


def test_verify_checks_the_weights_by_sha256(tmp_path):
    from lorsp.backbones import EFFICIENTNET_LITE0_WEIGHTS
    from lorsp.data.provenance import verify_weights

    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.pth").write_bytes(b"abc")
    sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"   # sha256("abc")
    assert verify_weights({"weights_source": "file:w.pth", "weights_sha256": sha}, tmp_path)[0] == "ok"
    assert verify_weights({"weights_source": "file:w.pth", "weights_sha256": "0" * 64}, tmp_path)[0] == "differs"
    assert verify_weights({"weights_source": "file:v.pth", "weights_sha256": sha}, tmp_path)[0] == "missing"
    package = {"weights_source": EFFICIENTNET_LITE0_WEIGHTS.source, "weights_sha256": EFFICIENTNET_LITE0_WEIGHTS.sha256}
    assert verify_weights(package, tmp_path)[0] == "ok"


def test_verify_names_a_missing_results_folder(tmp_path, capsys):
    assert cli(["data", "verify", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_older_record_is_stamped_portable_in_place(tmp_path):
    from lorsp.backbones import file_sha256
    from lorsp.data.provenance import stamp_record

    root = _cifar_like(tmp_path / "root")
    (root / "weights").mkdir()
    (root / "weights" / "w.safetensors").write_bytes(b"weights")
    folder = tmp_path / "results" / "run-a"
    folder.mkdir(parents=True)
    old = {"config": {"dataset": "cifar10", "image_size": 8, "seed": 0, "train_per_class": 2, "test_per_class": 2,
                      "output": "/work/main/runs/run-a"}, "run_dir": "/work/main/runs/run-a",
           "weights_source": "file:/work/main/data/weights/w.safetensors", "final_accuracy": 0.5,
           "data": {"n_train": 20, "path": "/work/main/data/cifar10/train"}}
    (folder / "record.json").write_text(json.dumps(old))
    assert stamp_record(folder / "record.json", root)
    new = json.loads((folder / "record.json").read_text())
    assert "/work" not in json.dumps(new) and new["final_accuracy"] == 0.5 and new["data"]["n_train"] == 20
    assert new["weights_source"] == "file:w.safetensors"
    assert new["weights_sha256"] == file_sha256(root / "weights" / "w.safetensors")
    assert new["data"]["provenance"]["train"] == _fingerprint(root, "train")
    assert not stamp_record(folder / "record.json", root)            # idempotent
    assert {r["status"] for r in verify_records([folder / "record.json"], root)} == {"ok"}
