"""lorsp.data: the dataset registry, image decoding (the bad-input matrix of issue 8, item 1), importing the
offline archives, the data root and the ImageNet sample images. Everything is small (32 px, a few images);
tests that need the real data root or the shared archives skip cleanly without them."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorsp import data
from lorsp.data import (BadImageError, ChecksumError, DatasetNotFoundError, UnsafeArchiveError, build_dataset,
                        data_root, describe_data, import_data, list_datasets, load_sample_images)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # the clone's sibling ../shared (as CI has it)
ROOT = data_root()  # the project's data root ($LORSP_DATA or data/)


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _check_image(x, size=32):
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, size, size)
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


# ---------------------------------------------------------------------------------------------------------
# registry and data root
# ---------------------------------------------------------------------------------------------------------
def test_registry_lists_the_papers_datasets():
    names = set(list_datasets())
    for name in ("cifar10", "cifar100", "tiny-imagenet", "eurosat", "oxford-pets", "food101", "dtd", "flowers102",
                 "imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r", "synthetic",
                 "folder:PATH"):
        assert name in names
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'"):
        build_dataset("cifar11")


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="split"):
        build_dataset("synthetic", split="training")
    with pytest.raises(ValueError, match="per_class"):
        build_dataset("synthetic", per_class=0)
    with pytest.raises(ValueError, match="bad_image_policy"):
        build_dataset("synthetic", bad_image_policy="ignore")
    with pytest.raises(ValueError, match="image_size"):
        build_dataset("synthetic", image_size=-3)


def test_data_root_order(tmp_path, monkeypatch):
    assert data_root(tmp_path / "x") == (tmp_path / "x").resolve()
    monkeypatch.setenv("LORSP_DATA", str(tmp_path / "env"))
    assert data_root() == (tmp_path / "env").resolve()
    monkeypatch.delenv("LORSP_DATA")
    project = tmp_path / "checkout"
    (project / "book").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "lorsp"\nversion = "0"\n')
    monkeypatch.chdir(project / "book")  # a notebook run from book/ finds the checkout's data/
    assert data_root() == (project / "data").resolve()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "pyproject.toml").write_text('[project]\nname = "other"\n')
    monkeypatch.chdir(tmp_path / "other")  # not a lorsp checkout: the package's own checkout (editable install)
    assert data_root().name == "data"
    assert data_root() != (tmp_path / "other" / "data")


# ---------------------------------------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------------------------------------
def test_dataset_location_follows_each_registered_layout(tmp_path):
    """One presence question for every caller (lorsp data fetch, the smoke scale): the registry's layouts."""
    from lorsp.data.registry import CIFAR_BATCHES

    assert data.dataset_location("cifar10", tmp_path) is None
    assert data.dataset_location("tiny-imagenet", tmp_path) is None
    assert data.dataset_location("synthetic", tmp_path) == ""
    batches, files = CIFAR_BATCHES["cifar10"]
    for name in files[:-1]:
        (tmp_path / "cifar10" / batches).mkdir(parents=True, exist_ok=True)
        (tmp_path / "cifar10" / batches / name).write_bytes(b"")
    assert data.dataset_location("cifar10", tmp_path) is None  # an incomplete batches folder is not CIFAR-10
    (tmp_path / "cifar10" / batches / files[-1]).write_bytes(b"")
    assert data.dataset_location("cifar-10", tmp_path) == f"cifar10/{batches}"  # aliases too
    (tmp_path / "cifar10" / "train").mkdir()
    (tmp_path / "cifar10" / "test").mkdir()
    assert data.dataset_location("cifar10", tmp_path) == "cifar10"  # the ImageFolder form comes first
    (tmp_path / "tiny-imagenet-200" / "train").mkdir(parents=True)
    assert data.dataset_location("tiny-imagenet", tmp_path) is None  # no val/ split
    (tmp_path / "tiny-imagenet-200" / "val").mkdir()
    assert data.dataset_location("tiny-imagenet", tmp_path) == "tiny-imagenet-200"
    (tmp_path / "imagenet-sketch" / "sketch").mkdir(parents=True)
    assert data.dataset_location("imagenet-sketch", tmp_path) == "imagenet-sketch/sketch"
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'"):
        data.dataset_location("cifar11", tmp_path)


def test_synthetic_is_deterministic_and_learnable():
    train = build_dataset("synthetic", "train", image_size=32, per_class=12)
    test = build_dataset("synthetic", "test", image_size=32, per_class=6, seed=5)
    assert train.num_classes == 10 and len(train) == 120 and len(test) == 60
    x0, y0 = train[7]
    _check_image(x0)
    again = build_dataset("synthetic", "train", image_size=32, per_class=12, seed=3)
    assert torch.equal(again[7][0], x0) and again[7][1] == y0  # images depend on (split, index) only
    assert not torch.equal(test[7][0], x0)
    # learnable: nearest class mean of the images' mean colours and colour spread, far above chance (10 %)
    def features(ds):
        xs = torch.stack([ds[i][0] for i in range(len(ds))])
        return torch.cat([xs.mean((2, 3)), xs.std((2, 3))], 1), torch.tensor(ds.targets)
    ftr, ytr = features(train)
    fte, yte = features(test)
    centroids = torch.stack([ftr[ytr == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(fte, centroids).argmin(1) == yte).float().mean().item()
    assert accuracy > 0.6, accuracy
    assert build_dataset("synthetic:4", image_size=16, per_class=2).num_classes == 4
    assert build_dataset("synthetic", image_size=16, per_class=2, num_classes=3).num_classes == 3


# ---------------------------------------------------------------------------------------------------------
# the bad-input matrix (issue 8, item 1) through folder:PATH
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def odd_images(tmp_path):
    """A folder dataset whose class 'odd' holds every awkward-but-valid image kind."""
    root = tmp_path / "odd"
    cls = root / "train" / "odd"
    gray16 = np.full((8, 8), 65535, dtype=np.uint16)
    gray16[:, :4] = 32896  # 0.502 · 65535
    files = {
        "gray.png": Image.new("L", (20, 10), 128),
        "bilevel.png": Image.new("1", (9, 9), 1),
        "cmyk.jpg": Image.new("CMYK", (16, 16), (255, 0, 0, 0)),  # pure cyan ink
        "rgba.png": Image.new("RGBA", (16, 16), (255, 0, 0, 0)),  # fully transparent → white background
        "palette.png": Image.new("P", (16, 16), 3),
        "gray16.png": Image.fromarray(gray16),
        "one_pixel.png": Image.new("RGB", (1, 1), (0, 255, 0)),
        "wide.png": Image.new("RGB", (1000, 3), (10, 20, 30)),
        "tall.jpg": Image.new("RGB", (2, 700), (200, 100, 50)),
    }
    for name, image in files.items():
        _save(cls / name, image)
    _save(root / "train" / "plain" / "a.png", Image.new("RGB", (8, 8), (1, 2, 3)))
    _save(root / "test" / "plain" / "b.png", Image.new("RGB", (8, 8), (1, 2, 3)))
    return root


def test_every_colour_mode_and_shape_becomes_rgb_in_unit_range(odd_images):
    ds = build_dataset(f"folder:{odd_images}", "train", image_size=32)
    assert ds.classes == ["odd", "plain"] and len(ds) == 10
    by_name = {Path(p).name: i for i, p in enumerate(ds.paths)}
    for index in range(len(ds)):
        x, label = ds[index]
        _check_image(x)
    pixel = lambda name: ds[by_name[name]][0][:, 16, 16]
    assert torch.allclose(pixel("gray.png"), torch.full((3,), 128 / 255), atol=1e-3)
    assert torch.allclose(pixel("rgba.png"), torch.ones(3), atol=1e-3)  # transparent over white
    cyan = pixel("cmyk.jpg")
    assert cyan[0] < 0.1 and cyan[1] > 0.9 and cyan[2] > 0.9
    gray16 = ds[by_name["gray16.png"]][0]
    assert gray16[:, 16, 30].min() > 0.99  # 65535 → 1.0, not clipped garbage
    assert abs(gray16[0, 16, 2].item() - 0.502) < 0.01  # 32896 → 128/255
    assert torch.allclose(pixel("one_pixel.png"), torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(pixel("wide.png"), torch.tensor([10, 20, 30]) / 255, atol=1e-3)


def _bad_folder(tmp_path) -> Path:
    root = tmp_path / "bad"
    for c, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        for i in range(3):
            _save(root / "train" / c / f"{i}.jpg", Image.new("RGB", (24, 24), colour))
        _save(root / "test" / c / "0.jpg", Image.new("RGB", (24, 24), colour))
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "train" / "a" / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "train" / "b" / "notes.png").write_text("this is not an image")
    (root / "train" / "b" / "readme.txt").write_text("ignored: not an image extension")
    return root


def test_bad_files_error_policy_names_the_file_and_problem(tmp_path):
    root = _bad_folder(tmp_path)
    ds = build_dataset(f"folder:{root}", "train", image_size=32, bad_image_policy="error")
    assert len(ds) == 8 and ds.skipped == []
    errors = {}
    for i in range(len(ds)):
        try:
            _check_image(ds[i][0])
        except BadImageError as error:
            errors[Path(error.path).name] = str(error)
    assert set(errors) == {"truncated.jpg", "notes.png"}
    assert "truncated" in errors["truncated.jpg"] and str(root / "train" / "a" / "truncated.jpg") in errors["truncated.jpg"]
    assert "not an image" in errors["notes.png"] and "notes.png" in errors["notes.png"]


def test_bad_files_skip_policy_leaves_them_out_and_counts_them(tmp_path):
    root = _bad_folder(tmp_path)
    ds = build_dataset(f"folder:{root}", "train", image_size=32, bad_image_policy="skip")
    assert len(ds) == 6 and ds.targets.count(0) == 3 and ds.targets.count(1) == 3
    assert sorted(Path(p).name for p, _ in ds.skipped) == ["notes.png", "truncated.jpg"]
    assert all(reason for _, reason in ds.skipped)
    for i in range(len(ds)):
        _check_image(ds[i][0])
    # with per_class, the next good files of the class take a skipped file's place
    subset = build_dataset(f"folder:{root}", "train", image_size=32, per_class=3, bad_image_policy="skip")
    assert subset.targets.count(0) == 3 and subset.targets.count(1) == 3


def test_folder_structure_errors(tmp_path):
    root = tmp_path / "ds"
    _save(root / "train" / "a" / "0.png", Image.new("RGB", (4, 4)))
    (root / "train" / "empty").mkdir()
    _save(root / "test" / "a" / "0.png", Image.new("RGB", (4, 4)))
    with pytest.raises(FileNotFoundError, match=r"class folder .*empty.* is empty"):
        build_dataset(f"folder:{root}", "train", image_size=8)
    no_train = tmp_path / "no_train"
    _save(no_train / "val" / "a" / "0.png", Image.new("RGB", (4, 4)))
    with pytest.raises(FileNotFoundError, match=r"has no train/ split"):
        build_dataset(f"folder:{no_train}", "train", image_size=8)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        build_dataset(f"folder:{tmp_path / 'nowhere'}")
    stray = tmp_path / "stray"
    _save(stray / "train" / "a" / "0.png", Image.new("RGB", (4, 4)))
    _save(stray / "test" / "zebra" / "0.png", Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="zebra.*not a class of the train split"):
        build_dataset(f"folder:{stray}", "test", image_size=8)


def test_per_class_subset_is_seeded(tmp_path):
    root = tmp_path / "many"
    for c in ("a", "b", "c"):
        for i in range(10):
            _save(root / "train" / c / f"{i}.png", Image.new("RGB", (4, 4)))
    _save(root / "val" / "a" / "0.png", Image.new("RGB", (4, 4)))
    first = build_dataset(f"folder:{root}", per_class=4, seed=1, image_size=8)
    again = build_dataset(f"folder:{root}", per_class=4, seed=1, image_size=8)
    other = build_dataset(f"folder:{root}", per_class=4, seed=2, image_size=8)
    assert first.paths == again.paths and first.paths != other.paths
    assert first.class_counts() == {"a": 4, "b": 4, "c": 4}
    assert len(build_dataset(f"folder:{root}", "val", image_size=8)) == 1


# ---------------------------------------------------------------------------------------------------------
# named datasets in a (tmp) data root
# ---------------------------------------------------------------------------------------------------------
def test_missing_dataset_offline_names_dataset_root_and_import_command(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("cifar100", root=tmp_path)
    message = str(info.value)
    assert "'cifar100'" in message and str(tmp_path) in message and "lorsp data import" in message
    assert "download" in message  # torchvision could fetch it where a network exists
    with pytest.raises(DatasetNotFoundError, match="imagenet-r.*lorsp data import"):
        build_dataset("imagenet-r", "test", root=tmp_path)
    with pytest.raises(ValueError, match="test split only"):
        build_dataset("imagenet-r", "train", root=tmp_path)


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.cifar as cifar

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match=r"'cifar10'.*could not download it.*URLError"):
        build_dataset("cifar10", root=tmp_path, download=True)
    assert calls  # torchvision's download was really attempted


def test_tiny_imagenet_official_layout(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]
    (base).mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tone\nn02\ttwo\nn03\tthree\n")
    for w in wnids:
        for i in range(2):
            _save(base / "train" / w / "images" / f"{w}_{i}.JPEG", Image.new("RGB", (64, 64)), format="JPEG")
    lines = []
    for i, w in enumerate(["n03", "n01", "n03"]):
        _save(base / "val" / "images" / f"val_{i}.JPEG", Image.new("RGB", (64, 64)), format="JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t10\t10")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    train = build_dataset("tiny-imagenet", "train", image_size=16, root=tmp_path)
    test = build_dataset("tiny-imagenet", "test", image_size=16, root=tmp_path)
    assert train.classes == ["n01", "n02", "n03"] and len(train) == 6
    assert test.targets == [2, 0, 2] and test.class_descriptions == ["one", "two", "three"]
    _check_image(test[0][0], 16)
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt line 1"):
        build_dataset("tiny-imagenet", "test", root=tmp_path)


def test_class_names_are_words_not_wordnet_ids(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n09999999"]
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\n"
                                    "n01629819\tEuropean fire salamander, Salamandra salamandra\n")
    for w in wnids:
        _save(base / "train" / w / "images" / f"{w}_0.JPEG", Image.new("RGB", (8, 8)), format="JPEG")
    train = build_dataset("tiny-imagenet", "train", image_size=8, root=tmp_path)
    assert train.classes == wnids  # the labels stay keyed by WordNet id
    # words.txt's first synonym; a class words.txt lacks keeps its id
    assert data.class_names(train) == ["goldfish", "European fire salamander", "n09999999"]
    from lorsp.shifts import ShiftedDataset, SHIFTS

    shifted = ShiftedDataset(train, sorted(SHIFTS)[0])
    assert data.class_names(shifted) == data.class_names(train)
    assert data.class_names(torch.utils.data.Subset(train, [0])) == data.class_names(train)
    (base / "words.txt").unlink()  # without words.txt: ImageNet-1k's words for the ids it has
    assert data.class_names(build_dataset("tiny-imagenet", "train", image_size=8, root=tmp_path)) == [
        "goldfish", "European fire salamander", "n09999999"]
    with pytest.raises(TypeError, match="list has no classes"):
        data.class_names([1, 2])


def test_imagenet_a_and_v2_folders_map_to_imagenet_logits(tmp_path):
    wnids = data.imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764"
    for w in (wnids[5], wnids[1], wnids[900]):
        _save(tmp_path / "imagenet-a" / w / "x.jpg", Image.new("RGB", (10, 10)))
    a = build_dataset("imagenet-a", "test", image_size=16, root=tmp_path)
    assert a.class_subset == [1, 5, 900] and a.targets == [0, 1, 2] and a.num_classes == 3
    assert a.classes == [wnids[1], wnids[5], wnids[900]] and a.source_num_classes == 1000
    for k in ("0", "7", "999"):
        _save(tmp_path / "imagenet-v2" / k / "x.png", Image.new("RGB", (10, 10)))
    v2 = build_dataset("imagenet-v2", "test", image_size=16, root=tmp_path)
    assert v2.num_classes == 1000 and v2.class_subset is None and sorted(v2.targets) == [0, 7, 999]


def test_load_sample_images_missing_and_synthetic_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenet-samples.*lorsp data import"):
        load_sample_images(2, 16, root=tmp_path)
    fallback = load_sample_images(3, 16, root=tmp_path, allow_synthetic=True)
    assert fallback.synthetic and fallback.images.shape == (3, 3, 16, 16) and len(fallback.names) == 3


# ---------------------------------------------------------------------------------------------------------
# importing archives
# ---------------------------------------------------------------------------------------------------------
def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return path


def test_import_checks_sha256sums_and_refuses_path_traversal(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    source = tmp_path / "src"
    source.mkdir()
    archive = _zip(source / "mini.zip", {"mini/train/a/0.png": png.getvalue(), "mini/test/a/0.png": png.getvalue()})
    import hashlib

    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (source / "SHA256SUMS").write_text(f"{digest}  mini.zip\n")
    root = tmp_path / "root"
    first = import_data([archive], root=root)
    assert first[0]["checksum"] == "sha256 ok" and first[0]["written"] == 2
    again = import_data(archive, root=root)  # idempotent
    assert again[0]["written"] == 0 and again[0]["already_present"] == 2
    assert len(build_dataset("folder:" + str(root / "mini"), image_size=8)) == 1
    (source / "SHA256SUMS").write_text(f"{'0' * 64}  mini.zip\n")
    with pytest.raises(ChecksumError, match=r"checksum mismatch for .*mini.zip"):
        import_data(archive, root=root)
    evil = _zip(tmp_path / "evil.zip", {"ok.txt": b"fine", "../escaped.txt": b"no"})
    with pytest.raises(UnsafeArchiveError, match=r"\.\./escaped.txt"):
        import_data(evil, root=root)
    assert not (tmp_path / "escaped.txt").exists() and not (root / "ok.txt").exists()
    with pytest.raises(FileNotFoundError, match="no such file"):
        import_data(tmp_path / "missing.zip", root=root)


@pytest.mark.skipif(not (SHARED / "cifar10-test.zip").is_file(), reason=f"no shared archives at {SHARED}")
def test_import_shared_archives_gives_cifar10_and_tiny_imagenet(tmp_path):
    archives = [SHARED / "cifar10-test.zip", SHARED / "tiny-imagenet-200-val.zip",
                SHARED / "tiny-imagenet-200-train100.zip"]
    results = import_data(archives, root=tmp_path)
    assert all(r["checksum"] == "sha256 ok" for r in results)  # the shared SHA256SUMS lists them
    cifar = build_dataset("cifar10", "test", image_size=32, root=tmp_path, per_class=2)
    assert cifar.num_classes == 10 and len(cifar) == 20
    assert len(build_dataset("cifar10", "test", image_size=32, root=tmp_path)) == 10_000
    tiny_train = build_dataset("tiny-imagenet", "train", image_size=32, root=tmp_path, per_class=1)
    tiny_test = build_dataset("tiny-imagenet", "test", image_size=32, root=tmp_path)
    assert tiny_train.num_classes == tiny_test.num_classes == 200 and len(tiny_train) == 200
    assert len(tiny_test) == 10_000 and tiny_test.classes == tiny_train.classes
    _check_image(tiny_test[0][0])
    rows = {r["name"]: r for r in describe_data(tmp_path)}
    assert rows["cifar10"]["test"] == 10_000 and rows["tiny-imagenet"]["train"] == 20_000
    assert rows["cifar100"]["available"] is False and rows["cifar100"]["downloadable"] is True
    json.dumps(rows, default=str)  # what `lorsp data list` prints
    if (SHARED / "weights").is_dir():  # a bundle folder's weights/, checked against the SHA256SUMS above it
        weights = [p for p in (SHARED / "weights").iterdir() if p.suffix == ".safetensors"]
        copied = import_data(weights, root=tmp_path)
        assert all(r["kind"] == "weights" and r["checksum"] == "sha256 ok" for r in copied)
        assert all((tmp_path / "weights" / p.name).is_file() for p in weights)


# ---------------------------------------------------------------------------------------------------------
# the project's data root (skipped where it is not filled)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(data.dataset_location("cifar10", ROOT) is None, reason=f"no cifar10 in the data root {ROOT}")
def test_cifar10_from_the_data_root():
    ds = build_dataset("cifar10", "train", image_size=32, per_class=2, seed=0)
    assert ds.num_classes == 10 and len(ds) == 20 and ds.classes[0] == "airplane"
    _check_image(ds[0][0])


@pytest.mark.skipif(data.dataset_location("tiny-imagenet", ROOT) is None, reason=f"no tiny-imagenet in {ROOT}")
def test_tiny_imagenet_from_the_data_root():
    ds = build_dataset("tiny-imagenet", "test", image_size=32, per_class=1)
    assert ds.num_classes == 200 and len(ds) == 200
    _check_image(ds[3][0])


@pytest.mark.skipif(not (ROOT / "imagenet-samples").is_dir(), reason=f"no imagenet-samples in {ROOT}")
def test_sample_images_from_the_data_root():
    samples = load_sample_images(3, (24, 24), seed=0)
    assert not samples.synthetic and samples.images.shape == (3, 3, 24, 24)
    for name, label in zip(samples.names, samples.labels.tolist()):
        assert data.imagenet_wnids()[label] == name.split("_")[0]


def test_content_fingerprint_names_the_images_not_the_seed_that_drew_them():
    from lorsp.data.images import ArrayDataset
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8), [0, 1, 2] * 4

    def fingerprint(per_class, seed, size=8, pixels=images):
        return ArrayDataset(pixels, labels, ["a", "b", "c"], image_size=size, per_class=per_class,
                            seed=seed).content_fingerprint()

    assert fingerprint(4, seed=0) == fingerprint(4, seed=1) == fingerprint(None, seed=2)   # every image, any seed
    assert fingerprint(3, seed=0) != fingerprint(3, seed=1)          # a seeded subset: other images
    assert fingerprint(4, seed=0, size=16) != fingerprint(4, seed=0)   # another resolution
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert fingerprint(4, seed=0, pixels=changed) != fingerprint(4, seed=0)   # one pixel differs
    assert build_dataset("synthetic", per_class=2).content_fingerprint() is None   # cannot say: no sharing
