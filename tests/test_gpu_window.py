"""The GPU-window plan (lorsp.gpu_window), its data pack (lorsp.data.pack) and benchmarks/gpu_window.sh."""
from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lorsp import gpu_window as gw
from lorsp.data import build_dataset, data_root, dataset_location
from lorsp.data.images import load_rgb
from lorsp.data.pack import (PackError, load_packed_split, pack_data, read_manifest, row_delta, undo_row_delta,
                             verify_pack)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_window.sh"
ROOT = data_root()
WEIGHTS = ROOT / "weights" / gw.WEIGHTS_FILE
HAS_CIFAR = dataset_location("cifar10", ROOT) is not None
HAS_TINY = dataset_location("tiny-imagenet", ROOT) is not None


def _fake_root(root: Path, weights: bool = True) -> Path:
    """A data root with a small CIFAR-10-like ImageFolder (32×32 PNGs, 2 classes) and a stand-in weights file."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            folder = root / "cifar10" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if weights:
        (root / "weights").mkdir()
        (root / "weights" / gw.WEIGHTS_FILE).write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return root


def test_row_delta_is_undone_exactly():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    images[0] = 255  # wrap-around at both ends
    images[1] = 0
    delta = row_delta(images)
    assert delta.shape == (5, 3, 7, 9) and delta.dtype == np.uint8
    assert not np.array_equal(delta.transpose(0, 2, 3, 1), images)  # it does filter
    assert np.array_equal(undo_row_delta(delta), images)


def test_pack_round_trips_the_images_and_refuses_what_it_does_not_hold(tmp_path):
    source = _fake_root(tmp_path / "root")
    pack = tmp_path / "pack"
    manifest = pack_data(pack, {"cifar10": {"train_per_class": 2, "test_per_class": 1}}, root=source)
    assert verify_pack(pack) == read_manifest(pack) == manifest
    entry = manifest["datasets"]["cifar10"]
    assert entry["classes"] == ["cat", "dog"] and entry["image_shape"] == [32, 32, 3]
    assert entry["splits"]["train"]["count"] == 4 and entry["splits"]["train"]["class_counts"] == [2, 2]
    assert manifest["weights"][gw.WEIGHTS_FILE]["bytes"] == 4096
    for split, per_class in (("train", 2), ("test", 1)):
        original = build_dataset("cifar10", split=split, image_size=32, root=source, per_class=per_class, seed=0)
        packed = build_dataset("cifar10", split=split, image_size=32, root=pack, per_class=per_class, seed=3)
        assert packed.root is not None and str(packed.root).startswith(str(pack))
        assert packed.targets == original.targets and packed.classes == original.classes
        expected = np.stack([np.asarray(load_rgb(p)) for p in original.paths])
        assert np.array_equal(packed.images, expected)  # bit for bit, whatever the run's seed
        assert np.array_equal(packed[0][0].numpy(), original[0][0].numpy())  # the same tensors reach the model
    with pytest.raises(PackError, match="holds 2 train images per class.*3 per class"):
        build_dataset("cifar10", split="train", root=pack, per_class=3)
    with pytest.raises(PackError, match="all images"):
        build_dataset("cifar10", split="train", root=pack, per_class=None)
    # a changed file is found and named
    train_file = pack / entry["splits"]["train"]["file"]
    data = dict(np.load(train_file))
    data["images"][0, 0, 0, 0] ^= 1
    np.savez_compressed(train_file, **data)
    with pytest.raises(PackError, match="train.npz does not match its sha256"):
        verify_pack(pack)


def test_pack_refuses_to_pass_its_size_limit_or_go_without_weights(tmp_path):
    source = _fake_root(tmp_path / "root")
    with pytest.raises(PackError, match="over its limit of 0.001 MiB"):
        pack_data(tmp_path / "pack", {"cifar10": {"train_per_class": 2, "test_per_class": 1}}, root=source,
                  max_mib=0.001)
    assert not (tmp_path / "pack").exists() and not list(tmp_path.glob("pack.tmp-*"))
    bare = _fake_root(tmp_path / "bare", weights=False)
    with pytest.raises(PackError, match=r"no weights file .*mobilenetv2_100_tflite_in1k.safetensors.*lorsp data import"):
        pack_data(tmp_path / "pack2", {"cifar10": {"train_per_class": 1, "test_per_class": 1}}, root=bare)


def test_window_refuses_to_run_without_the_packs_weights(tmp_path):
    source = _fake_root(tmp_path / "root")
    pack = tmp_path / "pack"
    pack_data(pack, {"cifar10": {"train_per_class": 1, "test_per_class": 1}}, root=source, weights=())
    with pytest.raises(gw.WindowError, match=r"no MobileNetV2 weights .*mobilenetv2_100_tflite_in1k.safetensors is "
                                             r"missing.*hub download.*lorsp data import"):
        gw.run_window(tmp_path / "results", pack, smoke=True, blocks=["table2-cifar10"])
    assert not (tmp_path / "results").exists()
    with pytest.raises(gw.WindowError, match="no pack at"):
        gw.check_pack(tmp_path / "nowhere")


def test_the_plan_is_minis_chapters_resized_in_order_of_importance():
    from lorsp.experiments import grid, run_key

    plan = gw.window_plan()
    blocks = list(dict.fromkeys(item["block"] for item in plan))
    assert blocks == [name for name, _, _ in gw.BLOCKS]
    first = [item for item in plan if item["block"] == "table2-cifar10"]
    assert plan[:len(first)] == first and len(first) == 21
    labels = ["LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP", "LPF", "LoRSP"]
    assert [(i["run"]["seed"], i["run"]["tags"]["label"]) for i in first] == [(s, label) for s in (0, 1, 2)
                                                                                 for label in labels]
    for item in plan:
        run = item["run"]
        assert (run["image_size"], run["epochs"], run["batch_size"], run["device"]) == (224, 20, 256, "cuda")
        assert {k: run[k] for k in ("train_per_class", "test_per_class")} == gw.WINDOW_DATASETS[run["dataset"]]
    # every run is mini's run of the same chapter with only the image counts changed
    for name, chapter, dataset in gw.BLOCKS:
        mini = [r for r in grid(chapter, "mini") if dataset is None or r["dataset"] == dataset]
        ours = [i["run"] for i in plan if i["block"] == name]
        assert len(mini) == len(ours)
        for a, b in zip(mini, ours):
            a = {k: v for k, v in a.items() if k != "tags"}
            b = {k: v for k, v in b.items() if k != "tags"}
            assert {**a, **gw.WINDOW_DATASETS[a["dataset"]]} == b
    # a run listed again by a later chapter is shared (trained once); Table III and Fig. 5 add nothing new
    assert all(i["shared_with"] for i in plan if i["block"] in ("downstream", "gallery"))
    unique = [i["key"] for i in plan if not i["shared_with"]]
    assert len(unique) == len(set(unique)) == len({i["key"] for i in plan})
    assert all(i["key"] == run_key(i["run"]) for i in plan)


def _costs(per_run=0.0):
    rows = [dict(method=m, step_ms=ms, batch_size=10, ratio_to_floor=ms / 10)
            for m, ms in (("lorsp", 20.0), ("lorvp", 10.0), ("pad", 10.0), ("evp", 10.0), ("lpf", 10.0),
                          ("topk", 10.0), ("dropout", 10.0), ("lp", 5.0))]
    return gw.costs_from_bench(rows, per_run=per_run)


def test_estimates_follow_the_measured_costs():
    costs = _costs(per_run=1.5)
    assert costs.train["lorsp"] == pytest.approx(2e-3) and costs.eval == pytest.approx(5e-4)
    plan = gw.window_plan()
    by_label = {i["run"]["tags"]["label"]: i["run"] for i in plan if i["block"] == "table2-cifar10"}
    # 20 epochs × (2,560 train images × 2 ms + 1,000 test images × 0.5 ms) + 1.5 s
    assert gw.estimate_seconds(by_label["LoRSP"], costs) == pytest.approx(20 * (2560 * 2e-3 + 1000 * 5e-4) + 1.5)
    # LP: the features of every image once (the engine caches them)
    assert gw.estimate_seconds(by_label["LP"], costs) == pytest.approx(3560 * 5e-4 + 1.5)
    ood = next(i["run"] for i in plan if i["block"] == "ood" and i["run"]["tags"]["label"] == "LoRSP")
    assert gw.estimate_seconds(ood, costs) == pytest.approx(20 * (1600 * 2e-3 + 400 * 5e-4) + 4 * 400 * 5e-4 + 1.5)
    rows, per_block = gw.plan_table(plan, costs)
    assert per_block["downstream"] == per_block["gallery"] == 0.0
    assert per_block["table2-cifar10"] == pytest.approx(sum(r["estimated_s"] for r in rows[:21]))
    done = {rows[0]["key"]}
    assert gw.plan_table(plan, costs, done)[1]["table2-cifar10"] == pytest.approx(
        per_block["table2-cifar10"] - rows[0]["estimated_s"])
    text = gw.format_plan(rows, per_block, markdown=True)
    assert "| table2-cifar10 | LoRSP | 0 | cifar10 | 2,560 | 1,000 | 20 |" in text


def test_the_window_stops_before_a_run_that_would_not_end_in_time(tmp_path, monkeypatch):
    monkeypatch.setenv("LORSP_DATA", str(tmp_path / "callers-root"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    source = _fake_root(tmp_path / "root")
    pack = tmp_path / "pack"
    pack_data(pack, {"cifar10": {"train_per_class": 2, "test_per_class": 1}}, root=source)
    slow = _costs(per_run=3600.0)
    lines = []
    summary = gw.run_window(tmp_path / "results", pack, minutes=1.0, smoke=True, blocks=["table2-cifar10"],
                            costs=slow, bundle=tmp_path / "out" / "records.tar.gz", log=lines.append)
    assert summary["finished_runs"] == 0 and summary["runs"] == []
    assert summary["stopped"].startswith("before table2-cifar10 LP seed 0") and "7 runs not started" in summary["stopped"]
    assert json.loads((tmp_path / "results" / "summary.json").read_text())["stopped"] == summary["stopped"]
    assert summary["expected_minutes"]["table2-cifar10"] == pytest.approx(7 * 60.0, rel=0.01)
    with tarfile.open(tmp_path / "out" / "records.tar.gz") as tar:
        assert tar.getnames() == ["mini-window/summary.json"]
    # the pack was the data root only while the window ran: the caller's environment is back
    assert os.environ["LORSP_DATA"] == str(tmp_path / "callers-root") and "HF_HUB_OFFLINE" not in os.environ


@pytest.mark.skipif(not (HAS_CIFAR and HAS_TINY and WEIGHTS.is_file()),
                    reason=f"needs CIFAR-10, Tiny-ImageNet and the MobileNetV2 weights in the data root {ROOT}")
def test_the_windows_pack_fits_40_mib_and_holds_runs_seed_0_subset(tmp_path):
    manifest = pack_data(tmp_path / "pack", gw.WINDOW_DATASETS)
    assert manifest["total_bytes"] <= 40 * 2**20
    on_disk = sum(p.stat().st_size for p in (tmp_path / "pack").rglob("*") if p.is_file())
    assert on_disk <= 40 * 2**20  # the manifest included
    tiny = manifest["datasets"]["tiny-imagenet"]
    assert tiny["image_shape"] == [64, 64, 3] and tiny["splits"]["train"]["count"] == 1600
    assert manifest["datasets"]["cifar10"]["image_shape"] == [32, 32, 3]
    # the packed test images are the very pixels of the files a seed-0 run on the full data would read
    original = build_dataset("cifar10", split="test", per_class=100, seed=0)
    images, labels, _ = load_packed_split(tmp_path / "pack", "cifar10", "test")
    assert labels.tolist() == original.targets
    for i in (0, 137, 999):
        assert np.array_equal(images[i], np.asarray(load_rgb(original.paths[i])))


@pytest.mark.skipif(not (HAS_CIFAR and WEIGHTS.is_file()),
                    reason=f"needs CIFAR-10 and the MobileNetV2 weights in the data root {ROOT}")
def test_the_window_script_runs_end_to_end_on_a_cpu_and_resumes(tmp_path):
    pack = tmp_path / "pack"
    pack_data(pack, {"cifar10": gw.SMOKE_DATASETS["cifar10"]})
    results, out = tmp_path / "results", tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "DEVICE": "cpu", "BLOCKS": "table2-cifar10", "PACK": str(pack),
           "RESULTS": str(results), "OUT": str(out), "MINUTES": "30"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (out / "window.log").read_text()
    assert "expected minutes per block" in log and "block table2-cifar10:" in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished_runs"] == 7 and summary["stopped"] is None
    assert summary["costs"]["source"].startswith("measured at start on cpu")
    plan = gw.window_plan(smoke=True, blocks=["table2-cifar10"])
    for item in plan:
        record = json.loads((results / item["key"] / "record.json").read_text())
        assert record["status"] == "completed"
        assert record["weights_source"] == f"file:{gw.WEIGHTS_FILE}"
        from lorsp.backbones import file_sha256   # the pack's weights and images, named portably
        assert record["weights_sha256"] == file_sha256(pack / "weights" / gw.WEIGHTS_FILE)
        assert record["data"]["provenance"]["train"]["location"] == "packed/cifar10/train.npz"
        assert str(pack) not in json.dumps(record)
        assert record["experiment"]["tags"]["block"] == "table2-cifar10"
    assert {r["label"] for r in summary["accuracy"]} == {i["run"]["tags"]["label"] for i in plan}
    with tarfile.open(out / "mini-window-records.tar.gz") as tar:
        names = tar.getnames()
    assert sorted(n for n in names if n.endswith("record.json")) == sorted(
        f"mini-window/{i['key']}/record.json" for i in plan)
    # a second invocation finds every run done: it measures nothing and trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in results.glob("*/record.json")}
    lines = []
    again = gw.run_window(results, pack, smoke=True, blocks=["table2-cifar10"], log=lines.append)
    assert again["costs"] is None and again["runs"] == [] and again["finished_runs"] == 7
    assert lines[0].startswith("gpu-window: backbone: mobilenetv2") and "7 already done, 0 to run" in lines[1]
    assert stamps == {p: p.stat().st_mtime_ns for p in results.glob("*/record.json")}


@pytest.mark.skipif(subprocess.run(["bash", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0,
                    reason="this machine has nvidia-smi")
def test_the_window_script_says_when_there_is_no_gpu(tmp_path):
    env = {**os.environ, "PACK": str(tmp_path / "pack"), "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no GPU here" in done.stdout + done.stderr


def test_the_readmes_h100_estimate_is_what_the_code_computes_from_the_committed_records():
    records = sorted((REPO / "benchmarks").glob("cpu-mobilenetv2-128-[abc].json"))
    assert len(records) == 3
    rows = [row for path in records for row in json.loads(path.read_text())["rows"]]
    readme = (REPO / "benchmarks" / "README.md").read_text()
    for floor, column in ((4626, 3), (2313, 4)):
        costs = gw.costs_from_bench(rows, per_run=3.0, floor_images_per_s=floor)
        assert "no rows for dropout, evp, lpf, pad, topk: costed as lorsp (upper bound)" in costs.source
        assert costs.train["pad"] == costs.train["lorsp"] > costs.train["lorvp"] > costs.eval
        per_block = gw.plan_table(gw.window_plan(), costs)[1]
        line = next(line for line in readme.splitlines() if line.startswith("| `table2-cifar10` | 21 |"))
        shown = line.split("|")[column + 1].strip().strip("*")
        assert f"{per_block['table2-cifar10'] / 60:.1f}" == shown
    assert per_block["table2-cifar10"] / 60 < 10  # even the pessimistic bound fits one 10-minute command


def test_the_plan_says_which_backbone_it_trains(capsys):
    from lorsp.cli import main as cli

    assert cli(["gpu-window", "plan", "--costs-from", "benchmarks/cpu-window-costs-128-loaded.json"]) == 0
    first_lines = capsys.readouterr().out.splitlines()[:2]
    assert first_lines[1] == ("backbone: mobilenetv2, with the ImageNet-1k weights of the pack's "
                              "weights/mobilenetv2_100_tflite_in1k.safetensors")
