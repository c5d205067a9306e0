"""Bad inputs through the real data and weights paths: each ends in a correct result or a clear error naming
the file (or flag) and the problem.

- colour modes (grayscale, CMYK, RGBA, palette, 16-bit PNG) → RGB float32 in [0, 1] of the asked size;
- a 1×1 image and extreme aspect ratios → the asked size;
- a truncated JPEG and non-images with an image extension under both ``bad_image_policy`` values
  ("error" names the file; "skip" leaves them out and the count reaches the run record);
- an empty class folder, a dataset folder without a train split, a dataset missing offline;
- a weights file of another architecture (the first mismatching key and both shapes);
- out-of-range hyperparameters on the command line (exit status 2, the flag and its allowed range).

Every fixture is built in ``tmp_path`` with PIL; nothing here needs the data root.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorsp.data import BadImageError, DatasetNotFoundError, build_dataset

SIDE = 8  # fixture images are SIDE × SIDE unless the test is about sizes; datasets resize to SIDE (identity)


# ---------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------
def random_rgb(seed: int, size=(SIDE, SIDE)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def write(path: Path, image: Image.Image | bytes | str, **save_kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, bytes):
        path.write_bytes(image)
    elif isinstance(image, str):
        path.write_text(image)
    else:
        image.save(path, **save_kw)
    return path


def make_folder(root: Path, per_class: int = 2, classes=("a", "b"), test_per_class: int = 1) -> Path:
    """A valid ImageFolder dataset ``root/{train,test}/<class>/*.png`` of random RGB images."""
    seed = 0
    for cls in classes:
        for i in range(per_class):
            write(root / "train" / cls / f"ok{i}.png", random_rgb(seed := seed + 1))
        for i in range(test_per_class):
            write(root / "test" / cls / f"ok{i}.png", random_rgb(seed := seed + 1))
    return root


def load_single(tmp_path: Path, name: str, image: Image.Image, image_size=SIDE, **save_kw):
    """Put ``image`` as train/a/<name> of a small dataset and return (tensor, label) read through the data path."""
    root = make_folder(tmp_path / "ds")
    path = write(root / "train" / "a" / name, image, **save_kw)
    dataset = build_dataset(f"folder:{root}", split="train", image_size=image_size)
    index = dataset.paths.index(str(path))
    return dataset[index]


def assert_rgb_unit(x: torch.Tensor, size=(SIDE, SIDE)) -> None:
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert tuple(x.shape) == (3, *size), tuple(x.shape)
    assert torch.isfinite(x).all()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0, (float(x.min()), float(x.max()))


def as_chw(array: np.ndarray) -> torch.Tensor:
    """HWC uint8 → CHW float in [0, 1] (what the data path must return at the image's own size)."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float() / 255.0


# ---------------------------------------------------------------------------------------------------------
# colour modes → RGB in [0, 1]
# ---------------------------------------------------------------------------------------------------------
def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(SIDE * SIDE, dtype=np.uint8).reshape(SIDE, SIDE) * 3
    x, label = load_single(tmp_path, "gray.png", Image.fromarray(gray, "L"))
    assert_rgb_unit(x)
    assert label == 0
    expected = torch.from_numpy(gray).float() / 255
    for channel in x:
        torch.testing.assert_close(channel, expected, atol=1e-6, rtol=0)


def test_bilevel_image_becomes_black_and_white_rgb(tmp_path):
    bits = (np.indices((SIDE, SIDE)).sum(0) % 2).astype(bool)
    x, _ = load_single(tmp_path, "bits.png", Image.fromarray(bits).convert("1"))
    assert_rgb_unit(x)
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("extension, save_kw", [(".tif", {}), (".jpg", {"quality": 95})])
def test_cmyk_becomes_rgb(tmp_path, extension, save_kw):
    cmyk = random_rgb(1).convert("CMYK")
    x, _ = load_single(tmp_path, "cmyk" + extension, cmyk, **save_kw)
    assert_rgb_unit(x)
    with Image.open(tmp_path / "ds" / "train" / "a" / ("cmyk" + extension)) as stored:
        assert stored.mode == "CMYK"
        expected = as_chw(np.asarray(stored.convert("RGB")))
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((SIDE, SIDE, 4), dtype=np.uint8)
    rgba[:, : SIDE // 2] = (10, 20, 30, 255)  # opaque colour
    rgba[:, SIDE // 2:] = (200, 0, 0, 0)  # fully transparent: white, whatever its colour
    x, _ = load_single(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA"))
    assert_rgb_unit(x)
    torch.testing.assert_close(x[:, :, : SIDE // 2], torch.tensor([10, 20, 30.0]).view(3, 1, 1).expand(3, SIDE, SIDE // 2)
                               / 255, atol=1e-6, rtol=0)
    assert torch.equal(x[:, :, SIDE // 2:], torch.ones(3, SIDE, SIDE - SIDE // 2))


def test_palette_images_become_their_colours(tmp_path):
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    index = (np.arange(SIDE * SIDE) % 3).astype(np.uint8).reshape(SIDE, SIDE)
    image = Image.fromarray(index, "P")
    image.putpalette(palette)
    x, _ = load_single(tmp_path, "pal.png", image)
    assert_rgb_unit(x)
    colours = torch.eye(3)[torch.from_numpy(index).long()]  # [H, W, 3]
    assert torch.equal(x, colours.permute(2, 0, 1))


def test_palette_with_a_transparent_colour_is_white_there(tmp_path):
    index = (np.arange(SIDE * SIDE) % 2).astype(np.uint8).reshape(SIDE, SIDE)
    image = Image.fromarray(index, "P")
    image.putpalette([0, 0, 255, 255, 0, 0] + [0] * (256 * 3 - 6))
    x, _ = load_single(tmp_path, "pal_t.png", image, transparency=1)  # index 1 (red) is transparent
    assert_rgb_unit(x)
    mask = torch.from_numpy(index).bool()
    assert torch.equal(x[:, mask], torch.ones(3, int(mask.sum())))  # transparent → white, not red
    assert torch.equal(x[:, ~mask], torch.tensor([0, 0, 1.0]).view(3, 1).expand(3, int((~mask).sum())))


def test_16_bit_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path):
    levels = np.array([0, 257, 128 * 257, 200 * 257, 65535, 1000, 30000, 60000], dtype=np.uint16)
    array = np.tile(levels, (SIDE, 1))
    path = write(tmp_path / "probe.png", Image.fromarray(array))
    with Image.open(path) as stored:
        assert stored.mode in ("I;16", "I"), stored.mode  # really a 16-bit image on disk
    x, _ = load_single(tmp_path, "g16.png", Image.fromarray(array))
    assert_rgb_unit(x)
    expected = torch.from_numpy(np.rint(array / 257.0)).float() / 255
    for channel in x:
        torch.testing.assert_close(channel, expected, atol=1e-6, rtol=0)
    assert float(x.max()) == 1.0 and float(x[0, 0, 2]) == pytest.approx(128 / 255)  # not saturated at 255


# ---------------------------------------------------------------------------------------------------------
# sizes
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (1000, 3), (3, 1000), (2, 1)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("image_size", [16, (12, 20)], ids=["square", "12x20"])
def test_tiny_and_extreme_aspect_images_become_the_requested_size(tmp_path, size, image_size):
    colour = (255, 0, 128)
    x, _ = load_single(tmp_path, "odd.png", Image.new("RGB", size, colour), image_size=image_size)
    target = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert_rgb_unit(x, target)
    expected = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 255  # a uniform image stays uniform
    torch.testing.assert_close(x, expected.expand_as(x), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# bad files under both policies
# ---------------------------------------------------------------------------------------------------------
def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    random_rgb(7, size=(32, 32)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 2]


BAD_FILES = {
    "truncated.jpg": (truncated_jpeg, "truncated"),
    "text.jpg": (lambda: b"this is not a JPEG, it is a text file\n", "not an image"),
    "empty.png": (lambda: b"", "not an image"),
    "broken.png": (lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ""),  # a PNG signature, then garbage
}


def make_bad_folder(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = make_folder(tmp_path / "bad", per_class=3)
    paths = {}
    for i, (name, (content, _)) in enumerate(BAD_FILES.items()):
        paths[name] = write(root / "train" / ("a", "b")[i % 2] / name, content())
    return root, paths


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_error_policy_names_the_bad_file_and_the_problem(tmp_path, name):
    root = make_folder(tmp_path / "ds")
    path = write(root / "train" / "a" / name, BAD_FILES[name][0]())
    dataset = build_dataset(f"folder:{root}", split="train", image_size=SIDE, bad_image_policy="error")
    assert dataset.skipped == []
    with pytest.raises(BadImageError) as info:
        for index in range(len(dataset)):
            dataset[index]
    message = str(info.value)
    assert str(path) in message and info.value.path == str(path)
    assert BAD_FILES[name][1] in message.lower()
    assert "skip" in message  # says how to go on instead


def test_error_policy_stops_a_dataloader_naming_the_file(tmp_path):
    root, paths = make_bad_folder(tmp_path)
    dataset = build_dataset(f"folder:{root}", split="train", image_size=SIDE)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    with pytest.raises(BadImageError) as info:
        for _ in loader:
            pass
    assert info.value.path in {str(p) for p in paths.values()}


def test_skip_policy_leaves_bad_files_out_and_lists_them(tmp_path):
    root, paths = make_bad_folder(tmp_path)
    dataset = build_dataset(f"folder:{root}", split="train", image_size=SIDE, bad_image_policy="skip")
    assert len(dataset) == 6 and dataset.class_counts() == {"a": 3, "b": 3}
    skipped = dict(dataset.skipped)
    assert set(skipped) == {str(p) for p in paths.values()}
    assert "truncated" in skipped[str(paths["truncated.jpg"])].lower()
    assert all(reason for reason in skipped.values())
    for index in range(len(dataset)):
        assert_rgb_unit(dataset[index][0])
    assert not set(dataset.paths) & set(skipped)


def test_skip_policy_replaces_skipped_files_in_a_per_class_subset(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=3)
    for i in range(3):
        write(root / "train" / "a" / f"bad{i}.jpg", b"not an image")
    dataset = build_dataset(f"folder:{root}", split="train", image_size=SIDE, bad_image_policy="skip",
                            per_class=3, seed=0)
    assert dataset.class_counts() == {"a": 3, "b": 3}  # the good images of class a fill the subset
    assert all("bad" not in Path(p).name for p in dataset.paths)


def _tiny_train_config(dataset: str, output: Path, **overrides):
    from lorsp.train import TrainConfig
    values = dict(backbone="resnet10t", random_init=True, dataset=dataset, method="lorsp", epochs=1, batch_size=4,
                  image_size=32, device="cpu", output=str(output), prompter_kwargs={"groups": 2, "rank": 2})
    values.update(overrides)
    return TrainConfig(**values)


def test_skipped_count_reaches_the_run_record(tmp_path):
    from lorsp import results
    from lorsp.train import train
    root, paths = make_bad_folder(tmp_path)
    write(root / "test" / "a" / "bad.jpg", b"nope")
    run_dir = tmp_path / "run"
    record = train(_tiny_train_config(f"folder:{root}", run_dir, bad_image_policy="skip",
                                      results_dir=str(tmp_path / "results")), progress=False)
    assert record["status"] == "completed"
    data = record["data"]
    assert (data["skipped_train"], data["skipped_test"], data["skipped"]) == (len(paths), 1, len(paths) + 1)
    assert (data["n_train"], data["n_test"]) == (6, 2)
    on_disk = json.loads((run_dir / "record.json").read_text())
    assert on_disk["data"]["skipped"] == len(paths) + 1 and on_disk["config"]["bad_image_policy"] == "skip"
    frame = results.load(tmp_path / "results")
    assert frame.loc[0, "skipped"] == len(paths) + 1


def test_error_policy_fails_the_run_naming_the_file_with_a_failed_record(tmp_path, capsys):
    from lorsp.cli import main
    root = make_folder(tmp_path / "ds")
    path = write(root / "train" / "b" / "text.jpg", b"not an image")
    run_dir = tmp_path / "run"
    code = main(["train", "--backbone", "resnet10t", "--random-init", "--dataset", f"folder:{root}", "--epochs", "1",
                 "--batch-size", "8", "--image-size", "32", "--device", "cpu", "--groups", "2", "--rank", "2",
                 "--output", str(run_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(path) in err and "not an image" in err and "--bad-images skip" in err
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "failed" and str(path) in record["reason"]


# ---------------------------------------------------------------------------------------------------------
# dataset layout problems
# ---------------------------------------------------------------------------------------------------------
def test_empty_class_folder_is_a_clear_error(tmp_path):
    root = make_folder(tmp_path / "ds")
    empty = root / "train" / "c"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    for policy in ("error", "skip"):
        with pytest.raises(FileNotFoundError) as info:
            build_dataset(f"folder:{root}", split="train", image_size=SIDE, bad_image_policy=policy)
        assert str(empty) in str(info.value) and "empty" in str(info.value)


def test_dataset_folder_without_a_train_split_is_a_clear_error(tmp_path):
    root = tmp_path / "only_test"
    write(root / "test" / "a" / "x.png", random_rgb(0))
    with pytest.raises(FileNotFoundError) as info:
        build_dataset(f"folder:{root}", split="train", image_size=SIDE)
    assert str(root) in str(info.value) and "train/" in str(info.value)


def test_dataset_folder_without_a_test_split_is_a_clear_error(tmp_path):
    root = tmp_path / "only_train"
    write(root / "train" / "a" / "x.png", random_rgb(0))
    with pytest.raises(FileNotFoundError) as info:
        build_dataset(f"folder:{root}", split="test", image_size=SIDE)
    assert str(root) in str(info.value) and "test/" in str(info.value) and "val/" in str(info.value)


def test_missing_dataset_folder_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset(f"folder:{missing}", split="train", image_size=SIDE)
    assert str(missing) in str(info.value) and "lorsp data import" in str(info.value)


@pytest.mark.parametrize("dataset", ["cifar10", "tiny-imagenet", "imagenet-r"])
def test_missing_dataset_offline_names_dataset_root_and_import_command(tmp_path, monkeypatch, dataset):
    root = tmp_path / "empty_root"
    root.mkdir()
    split = "test" if dataset == "imagenet-r" else "train"
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset(dataset, split=split, image_size=SIDE, root=root, download=False)
    message = str(info.value)
    assert repr(dataset) in message and str(root) in message and "lorsp data import" in message
    # the data root from LORSP_DATA is named the same way
    monkeypatch.setenv("LORSP_DATA", str(root))
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset(dataset, split=split, image_size=SIDE)
    assert str(root) in str(info.value)


def test_missing_dataset_from_the_cli_is_exit_2_with_the_message(tmp_path, capsys):
    from lorsp.cli import main
    root = tmp_path / "empty_root"
    root.mkdir()
    code = main(["train", "--dataset", "cifar10", "--data-root", str(root), "--backbone", "resnet10t",
                 "--random-init", "--epochs", "1", "--image-size", "32", "--device", "cpu",
                 "--output", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "'cifar10'" in err and str(root) in err and "lorsp data import" in err


# ---------------------------------------------------------------------------------------------------------
# weights files
# ---------------------------------------------------------------------------------------------------------
def _first_shape_mismatch(model_state, file_state):
    for key, value in model_state.items():
        if key in file_state and tuple(file_state[key].shape) != tuple(value.shape):
            return key, tuple(value.shape), tuple(file_state[key].shape)
    raise AssertionError("the fixture has no shape mismatch")


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_weights_of_another_architecture_name_the_first_mismatching_key_and_both_shapes(tmp_path, fmt):
    import timm
    from safetensors.torch import save_file

    from lorsp.backbones import WeightsMismatchError, create_backbone
    other = timm.create_model("resnet14t", pretrained=False).state_dict()  # bottlenecks: other widths, same keys
    path = tmp_path / f"resnet14t.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in other.items()}, str(path))
    else:
        torch.save({"state_dict": other}, path)
    mine = timm.create_model("resnet10t", pretrained=False).state_dict()
    key, expected_shape, file_shape = _first_shape_mismatch(mine, other)
    with pytest.raises(WeightsMismatchError) as info:
        create_backbone("resnet10t", weights=str(path))
    message = str(info.value)
    assert str(path) in message and "resnet10t" in message
    assert f"'{key}'" in message and str(expected_shape) in message and str(file_shape) in message, message


def test_unreadable_and_missing_weights_files_are_named(tmp_path):
    from lorsp.backbones import WeightsMismatchError, create_backbone
    garbage = write(tmp_path / "garbage.safetensors", b"\x00" * 64)
    with pytest.raises(WeightsMismatchError, match="garbage.safetensors"):
        create_backbone("resnet10t", weights=str(garbage))
    text = write(tmp_path / "notes.pth", "not a checkpoint")
    with pytest.raises(WeightsMismatchError, match="notes.pth"):
        create_backbone("resnet10t", weights=str(text))
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        create_backbone("resnet10t", weights=str(tmp_path / "nowhere.safetensors"))


def test_matching_weights_file_loads_and_is_recorded_as_the_source(tmp_path):
    import timm
    from safetensors.torch import save_file

    from lorsp.backbones import create_backbone
    reference = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "r10t.safetensors"
    save_file(reference.state_dict(), str(path))
    model, info = create_backbone("resnet10t", weights=str(path))
    assert info.weights_source == f"file:{path.name}"
    loaded = model.state_dict()
    for key, value in reference.state_dict().items():
        if key in loaded and value.is_floating_point():
            assert torch.equal(loaded[key], value), key


# ---------------------------------------------------------------------------------------------------------
# out-of-range hyperparameters on the command line
# ---------------------------------------------------------------------------------------------------------
CLI_CASES = [
    ("--lr", "-1", "(0, 100]"), ("--lr", "0", "(0, 100]"), ("--lr", "nan", "(0, 100]"), ("--lr", "inf", "(0, 100]"),
    ("--groups", "0", "[1, 4096]"), ("--rank", "-2", "[1, 4096]"), ("--tau", "0.5", "(1, inf)"),
    ("--tau", "1", "(1, inf)"), ("--epochs", "0", "[1, 100000]"), ("--batch-size", "0", "[1, 1048576]"),
    ("--momentum", "1", "[0, 1)"), ("--weight-decay", "-0.1", "[0, 1]"), ("--keep-ratio", "0", "(0, 1]"),
    ("--keep-ratio", "1.5", "(0, 1]"), ("--image-size", "0", "[1, 4096]"), ("--seed", "-1", "[0, 2147483647]"),
    ("--epochs", "two", "integer"), ("--surrogate-alpha", "0", "(0, inf)"),
]


@pytest.mark.parametrize("flag, value, allowed", CLI_CASES, ids=[f"{f}={v}" for f, v, _ in CLI_CASES])
def test_out_of_range_flag_is_exit_2_naming_the_flag_and_the_range(flag, value, allowed, capsys):
    from lorsp.cli import main
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "synthetic", f"{flag}={value}"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"argument {flag}" in err and allowed in err and repr(value).strip("'") in err, err


def test_python_m_lorsp_rejects_out_of_range_hyperparameters(tmp_path):
    """The four flags of the issue, each through a real ``python -m lorsp train`` process (run together)."""
    cases = {"--lr": ("-1", "(0, 100]"), "--groups": ("0", "[1, 4096]"), "--tau": ("0.5", "(1, inf)"),
             "--epochs": ("0", "[1, 100000]")}
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    processes = {flag: subprocess.Popen([sys.executable, "-m", "lorsp", "train", "--dataset", "synthetic",
                                         "--output", str(tmp_path / "never"), flag, value],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for flag, (value, _) in cases.items()}
    for flag, process in processes.items():
        out, err = process.communicate(timeout=120)
        value, allowed = cases[flag]
        assert process.returncode == 2, (flag, out, err)
        assert f"argument {flag}" in err and allowed in err and value in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "never").exists()  # nothing ran
