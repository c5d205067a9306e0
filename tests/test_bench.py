"""``lorsp bench`` and the on-device input pipeline: tiny runs, no timing assertions (speed targets are
measured in benchmarks/, not asserted in timed tests)."""
import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorsp import bench
from lorsp.data import build_dataset, data_root
from lorsp.data.gpu_pipeline import DeviceBatchLoader, ImageBank, bench_pipeline, resize_on_device

TINY = dict(backbones=["resnet10t"], batch_size=2, image_size=32, device="cpu", steps=2, warmup=1,
            random_init=True)


@pytest.fixture(scope="module")
def rows():
    return bench.run_bench(methods=["lorsp-reference", "lorsp", "lorsp-fused", "lorvp", "lp", "lp-cached"], **TINY)


def test_rows_have_the_required_keys(rows):
    assert [r["method"] for r in rows] == ["lorsp-reference", "lorsp", "lorsp-fused", "lorvp", "lp", "lp-cached"]
    for row in rows:
        assert set(bench.ROW_KEYS) <= set(row)
        assert row["backbone"] == "resnet10t" and row["device"] == "cpu"
        assert row["batch_size"] == 2 and row["image_size"] == 32
        assert row["step_ms"] > 0 and row["floor_ms"] > 0 and row["step_ms_iqr"] >= 0
        assert math.isclose(row["ratio_to_floor"], row["step_ms"] / row["floor_ms"])
        assert math.isclose(row["images_per_s"], 2 / (row["step_ms"] / 1000))
        assert row["weights_source"] == "random"
    by_method = {r["method"]: r for r in rows}
    for method in ("lorsp-reference", "lorsp", "lorsp-fused", "lorvp"):
        assert by_method[method]["prompt_ms"] > 0 and by_method[method]["prompt_params"] > 0
    assert by_method["lp"]["prompt_ms"] is None and by_method["lp"]["prompt_params"] == 0
    assert math.isclose(by_method["lorvp"]["ratio_to_lorvp"], 1.0)
    # the default's backend is what a 3-step run gets (eager on a CPU), and the row says so
    assert by_method["lorsp"]["lif_backend"] == "eager" and by_method["lorsp"]["run_steps"] == 3
    assert by_method["lorsp-fused"]["lif_backend"] == "eager" and by_method["lp"]["lif_backend"] is None
    assert by_method["lp-cached"]["speedup_vs_lp"] > 0
    # the fused generator keeps less for backward than the reference (device-independent count)
    assert by_method["lorsp-fused"]["saved_mb"] < by_method["lorsp-reference"]["saved_mb"]
    assert by_method["lorsp"]["saved_mb"] < by_method["lorsp-reference"]["saved_mb"]  # fused is the default
    for row in rows:  # the per-round times are kept, and the paired ratios recompute from them
        assert len(row["round_ms"]) == len(row["floor_round_ms"]) == 2
        paired = [t / f for t, f in zip(row["round_ms"], row["floor_round_ms"])]
        assert math.isclose(row["ratio_to_floor_paired"], sum(paired) / 2, rel_tol=1e-2)  # times kept to 0.1 µs
        assert row["ratio_to_floor_paired_ci95"] is None  # two rounds are too few for an interval


def test_median_ci_covers_the_median_at_its_level():
    assert bench.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    low, high = bench.median_ci(list(range(100)))
    assert low < 49.5 < high and high - low < 25
    rng = np.random.default_rng(0)
    true_median = math.log(2)  # exponential(1)
    trials = 2000
    covered = 0
    for _ in range(trials):
        low, high = bench.median_ci(rng.exponential(size=60).tolist())
        covered += low <= true_median <= high
    assert 0.93 <= covered / trials <= 0.985, covered / trials


def test_table_names_every_method(rows):
    table = bench.format_table(rows)
    for method in ("lorsp", "lorsp-fused", "lorvp", "lp-cached"):
        assert method in table
    assert "×floor" in table and "×LoR-VP" in table


def test_main_writes_json(tmp_path, capsys):
    parser = bench.add_arguments(argparse.ArgumentParser())
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--methods", "lorsp,lorvp", "--backbones", "resnet10t", "--batch-size", "2",
                              "--image-size", "32", "--device", "cpu", "--steps", "2", "--warmup", "0",
                              "--random-init", "--quiet", "--output", str(out)])
    assert bench.main(args) == 0
    record = json.loads(out.read_text())
    assert [r["method"] for r in record["rows"]] == ["lorsp", "lorvp"]
    assert record["meta"]["device"] == "cpu" and record["meta"]["torch"] == torch.__version__
    assert "lorsp" in capsys.readouterr().out


def test_cli_dispatches_to_bench(tmp_path):
    from lorsp.cli import main

    out = tmp_path / "cli.json"
    status = main(["bench", "--methods", "lp,lp-cached", "--backbones", "resnet10t", "--batch-size", "2",
                   "--image-size", "32", "--device", "cpu", "--steps", "1", "--warmup", "0", "--random-init",
                   "--quiet", "--output", str(out)])
    assert status == 0
    assert {r["method"] for r in json.loads(out.read_text())["rows"]} == {"lp", "lp-cached"}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="nonsense"):
        bench.run_bench(methods=["nonsense"], **TINY)
    with pytest.raises(ValueError, match="steps"):
        bench.run_bench(methods=["lp"], **{**TINY, "steps": 0})
    with pytest.raises(ValueError, match="positive"):
        bench.run_bench(methods=["lp"], **{**TINY, "batch_size": "0"})
    with pytest.raises(ValueError, match="dtype"):
        bench.run_bench(methods=["lp"], **{**TINY, "dtype": "float64"})
    with pytest.raises(ValueError, match="run_steps"):
        bench.run_bench(methods=["lp"], **{**TINY, "run_steps": 0})


# ---------------------------------------------------------------------------------------------------------
# the on-device input pipeline
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder with images of several native sizes and colour modes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (40, 30), (17, 23), (64, 64), (40, 30), (9, 50)]
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i, (h, w) in enumerate(sizes):
                array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                image = Image.fromarray(array)
                if i == 2:
                    image = image.convert("L")
                image.save(root / split / c / f"{i}.png")
    return root


def test_device_pipeline_gives_the_dataset_images(folder):
    dataset = build_dataset(f"folder:{folder}", split="train", image_size=24)
    bank = ImageBank.from_dataset(dataset)
    assert len(bank) == len(dataset) and bank.stacked is None and len(bank.sizes) == 4
    loader = DeviceBatchLoader(bank, batch_size=5, image_size=24, device="cpu", shuffle=False)
    images = torch.cat([x for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    expected = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert images.shape == expected.shape == (len(dataset), 3, 24, 24)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    assert labels.tolist() == list(dataset.targets)


def test_device_pipeline_shuffles_with_a_seed(folder):
    dataset = build_dataset(f"folder:{folder}", split="train", image_size=16)
    bank = ImageBank.from_dataset(dataset)
    loader = DeviceBatchLoader(bank, batch_size=4, image_size=16, seed=3, mean=(0.5,) * 3, std=(0.25,) * 3)

    def epoch(e):
        loader.set_epoch(e)
        return torch.cat([x for x, _ in loader]), torch.cat([y for _, y in loader])

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    # normalised on the device: (x - 0.5) / 0.25 of the [0, 1] image
    plain = DeviceBatchLoader(bank, batch_size=len(bank), image_size=16, shuffle=False)
    x, _ = next(iter(plain))
    order = torch.randperm(len(bank), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first[0], (x[order] - 0.5) / 0.25)
    assert len(loader) == 3


def test_stacked_bank_and_resize_match_torchvision():
    from lorsp.data import make_transform

    images = torch.randint(0, 256, (4, 3, 20, 28), dtype=torch.uint8)
    bank = ImageBank(images, [0, 1, 0, 1])
    assert bank.stacked is not None and bank.nbytes == images.numel()
    out = resize_on_device(images, 12)
    expected = torch.stack([make_transform(12)(im.permute(1, 2, 0).numpy()) for im in images])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="labels"):
        ImageBank(images, [0])
    with pytest.raises(ValueError, match="uint8"):
        ImageBank(images.float(), [0, 1, 0, 1])


def test_procedural_dataset_is_refused_clearly():
    dataset = build_dataset("synthetic", split="test", image_size=8, per_class=1)
    with pytest.raises(ValueError, match="decode once"):
        ImageBank.from_dataset(dataset)


def test_real_cifar10_images_match():
    if not (data_root() / "cifar10").is_dir():
        pytest.skip(f"no cifar10 in the data root {data_root()} (lorsp data import)")
    dataset = build_dataset("cifar10", split="test", image_size=48, per_class=1)
    bank = ImageBank.from_dataset(dataset)
    x, y = next(iter(DeviceBatchLoader(bank, batch_size=10, image_size=48, shuffle=False)))
    expected = torch.stack([dataset[i][0] for i in range(10)])
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    assert y.tolist() == list(dataset.targets)[:10]


def test_bench_pipeline_reports_both_paths(folder):
    result = bench_pipeline(f"folder:{folder}", batch_size=4, image_size=16, device="cpu", max_images=8,
                            num_workers=0, epochs=1)
    assert result["images"] == 8 and result["device"] == "cpu"
    assert result["dataloader_images_per_s"] > 0 and result["device_pipeline_images_per_s"] > 0
    assert result["decode_s"] >= 0 and result["bank_mb"] > 0


def test_bench_cli_pipeline_prints_a_summary_and_writes_the_record(folder, tmp_path, capsys):
    output = tmp_path / "pipeline.json"
    args = bench.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--pipeline", f"folder:{folder}", "--batch-size", "4", "--image-size", "16", "--device", "cpu",
         "--pipeline-images", "8", "--workers", "0", "--output", str(output)])
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    assert "DataLoader with 0 workers" in printed and "decode-once pipeline" in printed
    assert f"wrote {output}" in printed
    record = json.loads(output.read_text())
    assert record["meta"]["device"] == "cpu" and record["rows"][0]["images"] == 8


# ---------------------------------------------------------------------------------------------------------
# benchmarks/gpu_session.sh, at its smoke sizes on the CPU: every part's command line must run, so that a
# task lent a GPU does not lose its device time to a broken script
# ---------------------------------------------------------------------------------------------------------
SESSION = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh"


def _session(tmp_path, *parts, **env):
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                   "SMOKE": "1", "DEVICE": "cpu", "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path),
                   "BACKBONES": "mobilenetv2", "LORSP_AOT_CACHE": str(tmp_path / "aot"), **env}
    return subprocess.run(["bash", str(SESSION), *parts], env=environment, capture_output=True, text=True,
                          timeout=1200)


def _samples(folder: Path, count: int = 8) -> Path:
    """JPEGs named like the data root's ImageNet samples, ``<wnid>_<name>.JPEG``."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(count):
        array = rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"n0000000{i % 2}_image{i}.JPEG")
    return folder


def test_gpu_session_script_runs_every_part_at_smoke_size(tmp_path):
    done = _session(tmp_path, SAMPLES=str(_samples(tmp_path / "samples")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all parts done" in done.stdout
    out = tmp_path / "out"
    files = sorted(path.name for path in out.iterdir())
    assert files == ["env.txt", "gpu-backbones-32.json", "gpu-generator-bf16.json", "gpu-generator-fp32.json",
                     "gpu-pipeline-w0.json", "gpu-pipeline-w1.json", "gpu-train.txt", "gpu-vit_b32-32.json"]
    assert len(files) <= 8  # what the device returns from $OUT
    for name in ("gpu-generator-bf16.json", "gpu-generator-fp32.json"):
        variants = json.loads((out / name).read_text())
        assert [v["variant"] for v in variants] == ["reference", "eager", "compile"]
        for variant in variants:
            assert max(variant[k] for k in ("rel_err_delta", "rel_err_grad_projection", "rel_err_grad_basis")) < 1e-4
    headline = json.loads((out / "gpu-vit_b32-32.json").read_text())
    assert [r["method"] for r in headline["rows"]] == ["lorsp-reference", "lorsp", "lorsp-fused", "lorsp-compiled",
                                                       "lorvp", "lp", "lp-cached"]
    assert {r["dtype"] for r in headline["rows"]} == {"bfloat16"}
    sweep = json.loads((out / "gpu-backbones-32.json").read_text())
    assert {r["backbone"] for r in sweep["rows"]} == {"mobilenetv2"}
    pipeline = json.loads((out / "gpu-pipeline-w1.json").read_text())
    assert pipeline["rows"][0]["images"] == 8 and pipeline["rows"][0]["num_workers"] == 1
    trained = (out / "gpu-train.txt").read_text()  # synthetic through the DataLoader, the JPEGs decoded once
    assert "mobilenetv2/synthetic: final accuracy" in trained and "/lorsp-imagenet-samples: final accuracy" in trained
    # the README's tables from these records; each pipeline against the fastest LoRSP step it would feed
    tables = subprocess.run([sys.executable, str(SESSION.parent / "tables.py"), *sorted(out.glob("*.json"))],
                            capture_output=True, text=True, check=True).stdout
    fastest = max((r for r in headline["rows"] + sweep["rows"] if r["method"] == "lorsp"),
                  key=lambda r: r["images_per_s"])
    line = next(line for line in tables.splitlines() if line.startswith("| `gpu-pipeline-w1.json`"))
    assert f"({fastest['backbone']})" in line
    ratio = pipeline["rows"][0]["device_pipeline_images_per_s"] / fastest["images_per_s"]
    assert float(line.rstrip(" |").rsplit("|", 1)[1].replace(",", "")) == pytest.approx(ratio, rel=0.01)
    assert "| lorsp-compiled (`backend=\"compile\"`) |" in tables and "`gpu-generator-bf16.json`" in tables


def test_gpu_session_script_goes_on_after_a_failed_part_and_says_which(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _session(tmp_path, "pipeline", "env", SAMPLES=str(tmp_path / "empty"))
    assert done.returncode == 1
    assert "failed parts: pipeline" in done.stderr and "lorsp data import" in done.stderr
    assert "torch" in (tmp_path / "out" / "env.txt").read_text()
    unknown = _session(tmp_path, "warp")
    assert unknown.returncode == 2 and "unknown part warp" in unknown.stderr
