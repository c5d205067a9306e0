"""The dataset registry: :func:`build_dataset` by name, :func:`list_datasets`, :func:`register_dataset`.

Lookup order for a named dataset (``root`` = :func:`lorsp.data.data_root`):

1. the data root: the dataset's own layout (below), or the generic ImageFolder form
   ``<root>/<folder>/train/<class>/…`` with ``test/`` or ``val/`` beside it;
2. torchvision's download into the data root, when ``download=True`` and torchvision provides the dataset;
3. :class:`DatasetNotFoundError` naming the dataset, the data root, the paths looked at and the import
   command (``lorsp data import PATH``).

======================  ===============================================================  ============
name                    local layout in the data root                                    download
======================  ===============================================================  ============
``cifar10``             ``cifar10/{train,test}/<class>/*.jpg`` or ``cifar-10-batches-py`` torchvision
``cifar100``            ``cifar100/{train,test}/<class>/*`` or ``cifar-100-python``       torchvision
``tiny-imagenet``       ``tiny-imagenet-200/`` official: ``wnids.txt``,                    no
                        ``train/<wnid>/images/*.JPEG``, ``val/images`` +
                        ``val/val_annotations.txt``
``eurosat``             torchvision's ``eurosat/2750/<class>/*.jpg``; split below          torchvision
``oxford-pets``         torchvision's ``oxford-iiit-pet/`` (trainval / test)               torchvision
``food101``             torchvision's ``food-101/`` (train / test)                         torchvision
``dtd``                 torchvision's ``dtd/dtd/`` (partition 1, train / test)             torchvision
``flowers102``          torchvision's ``flowers-102/`` (train / test)                      torchvision
``imagenet``            ``imagenet/{train,val}/<wnid>/*.JPEG``                             no
``imagenet-v2``         ``imagenet-v2/<0..999 or wnid>/*`` (test only)                     no
``imagenet-sketch``     ``imagenet-sketch/<wnid>/*`` or ``imagenet-sketch/sketch/`` (test) no
``imagenet-a``          ``imagenet-a/<wnid>/*`` (test only, 200 classes)                   no
``imagenet-r``          ``imagenet-r/<wnid>/*`` (test only, 200 classes)                   no
``folder:PATH``         ``PATH/train/<class>/*`` and ``PATH/test`` or ``PATH/val``         —
``synthetic``           none: procedural (:mod:`lorsp.data.synthetic`); ``synthetic:N``    —
                        for N classes
======================  ===============================================================  ============

Labels: ImageFolder forms use the sorted class-folder names of ``train/`` (the test split is mapped with
the train classes); ImageNet and its variants use the 1,000 ImageNet-1k classes in timm's logit order.
ImageNet-A and ImageNet-R cover 200 of them: their labels are 0–199 and ``dataset.class_subset`` gives the
ImageNet index of each (the evaluator scores over those 200 logits only); ``dataset.source_num_classes`` is
1000. ``split="test"`` is the official test split, or the validation split where a dataset has no public test
labels (ImageNet, Tiny-ImageNet). ``split="val"`` is accepted as a synonym of "test" (``folder:PATH`` prefers
``val/`` for it).

:func:`dataset_location` says, from the same layouts and without opening a file, whether (and where) the data
root holds a dataset; every "is it in the data root?" question of lorsp (``lorsp data fetch``, the smoke scale)
asks it.

EuroSAT has no official split: :data:`EUROSAT_TEST_FRACTION` (20 %) of each class, drawn with
``numpy.random.default_rng(EUROSAT_SPLIT_SEED=0)`` (independent of the run seed, so every run sees the same
test set), is the test split, the rest the train split.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import BAD_IMAGE_POLICIES, ArrayDataset, ImageFileDataset, LorspDataset, as_image_size, list_images
from .root import IMPORT_HINT, data_root

EUROSAT_SPLIT_SEED = 0
EUROSAT_TEST_FRACTION = 0.2
SPLITS = ("train", "test", "val")

__all__ = ["DatasetSpec", "DatasetNotFoundError", "register_dataset", "build_dataset", "list_datasets",
           "dataset_spec", "dataset_location", "CIFAR_BATCHES", "EUROSAT_SPLIT_SEED", "EUROSAT_TEST_FRACTION"]

#: torchvision's pickled CIFAR folders: dataset → (folder, in the data root or under the dataset's folder, and
#: the files it must hold)
CIFAR_BATCHES = {
    "cifar10": ("cifar-10-batches-py", ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                        "data_batch_5", "test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset that is neither in the data root nor downloadable (or not allowed to be downloaded)."""


@dataclass
class BuildRequest:
    name: str
    split: str  # "train" | "test" | "val"
    image_size: tuple[int, int]
    root: Path
    per_class: int | None
    seed: int
    download: bool
    bad_image_policy: str
    options: dict = field(default_factory=dict)

    @property
    def is_train(self) -> bool:
        return self.split == "train"

    def files(self, samples, classes, where, **extra) -> ImageFileDataset:
        return ImageFileDataset(samples, classes, image_size=self.image_size, per_class=self.per_class,
                                seed=self.seed, bad_image_policy=self.bad_image_policy, name=self.name,
                                split="train" if self.is_train else "test", root=where, **extra)


@dataclass
class DatasetSpec:
    """One registered dataset: ``folder`` (its folder in the data root), ``torchvision`` (the torchvision class
    name that can download it, or None), ``splits``, ``num_classes`` (when fixed), ``build`` and ``locate``
    (``locate(root)``: where the data root holds it, relative to the root, or None; default the ImageFolder
    form of ``folder``)."""
    name: str
    description: str
    build: Callable[[BuildRequest], LorspDataset]
    folder: str | None = None
    torchvision: str | None = None
    splits: tuple[str, ...] = ("train", "test")
    num_classes: int | None = None
    aliases: tuple[str, ...] = ()
    locate: Callable[[Path], str | None] | None = None

    @property
    def downloadable(self) -> bool:
        return self.torchvision is not None


_REGISTRY: dict[str, DatasetSpec] = {}
_ALIASES: dict[str, str] = {}


def register_dataset(name: str, description: str, folder: str | None = None, torchvision: str | None = None,
                     splits=("train", "test"), num_classes: int | None = None, aliases=(), locate=None):
    """Class/function decorator: ``@register_dataset("cifar10", "…")`` over ``build(request) → dataset``;
    ``locate(root)`` says where the data root holds the dataset (see :func:`dataset_location`)."""
    def decorate(build):
        spec = DatasetSpec(name, description, build, folder or name, torchvision, tuple(splits), num_classes,
                           tuple(aliases), locate)
        _REGISTRY[name] = spec
        for alias in (name, *aliases):
            _ALIASES[alias.lower()] = name
        return build
    return decorate


def list_datasets() -> list[str]:
    """Registered names, plus the two parametrised forms ``folder:PATH`` and ``synthetic``."""
    return sorted(_REGISTRY) + ["folder:PATH"]


def registered_datasets() -> dict[str, DatasetSpec]:
    """Every registered dataset's spec by its name (a copy of the registry)."""
    return dict(_REGISTRY)


def dataset_spec(name: str) -> DatasetSpec:
    key = _ALIASES.get(str(name).lower().replace("_", "-"), _ALIASES.get(str(name).lower()))
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(list_datasets())} "
                         f"(or synthetic:N for N synthetic classes)")
    return _REGISTRY[key]


def dataset_location(name: str, root=None) -> str | None:
    """Where the data root (default :func:`lorsp.data.data_root`) holds the dataset ``name`` in the layout its
    registered builder reads (module docstring): the path relative to the root, e.g. ``"cifar10"``,
    ``"cifar-10-batches-py"`` or ``"tiny-imagenet-200"``; None when it is not there. Only names are looked at
    (no image is opened and no checksum computed), so it is cheap; a dataset that needs no files
    (``synthetic``) is at ``""``. Without a registered ``locate``: the ImageFolder form of the dataset's folder,
    or, for a dataset torchvision downloads, torchvision's folder of that name (torchvision checks its files
    when the dataset is built)."""
    spec = dataset_spec(name)
    base = data_root(root)
    if spec.locate is not None:
        return spec.locate(base)
    if has_imagefolder(base / spec.folder) or (spec.downloadable and (base / spec.folder).is_dir()):
        return spec.folder
    return None


def _not_found(request: BuildRequest, spec: DatasetSpec | None, looked: list, reason: str = "") -> DatasetNotFoundError:
    where = "; ".join(str(p) for p in looked) if looked else str(request.root)
    if spec is not None and spec.downloadable:
        how = (f" or let torchvision download it (download=True, `lorsp train --download`)"
               if not request.download else "")
    else:
        how = " (torchvision cannot download it: get the files and import them)"
    detail = f" {reason}" if reason else ""
    return DatasetNotFoundError(
        f"dataset {request.name!r} not found in the data root {request.root} (looked for: {where}).{detail} "
        f"Import it with `{IMPORT_HINT}` (a zip, tar or folder; the data root is $LORSP_DATA or the "
        f"project's data/, or pass --data-root){how}.")


# ---------------------------------------------------------------------------------------------------------
# ImageFolder forms
# ---------------------------------------------------------------------------------------------------------
def class_folders(split_dir: Path, name: str) -> list[Path]:
    """The class folders of ``split_dir``; a clear error when there are none or one is empty."""
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise FileNotFoundError(f"{name}: {split_dir} has no class folders (expected {split_dir}/<class>/"
                                f"<images>)")
    return folders


def folder_samples(split_dir: Path, classes: list[str], name: str) -> list[tuple[Path, int]]:
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for folder in class_folders(split_dir, name):
        if folder.name not in index:
            raise ValueError(f"{name}: class folder {folder} is not a class of the train split "
                             f"({len(classes)} classes: {', '.join(classes[:5])}{', …' if len(classes) > 5 else ''})")
        files = list_images(folder)
        if not files:
            raise FileNotFoundError(f"{name}: class folder {folder} is empty (no image files)")
        samples.extend((path, index[folder.name]) for path in files)
    return samples


def has_imagefolder(folder: Path) -> bool:
    return (folder / "train").is_dir() and ((folder / "test").is_dir() or (folder / "val").is_dir())


def build_imagefolder(request: BuildRequest, folder: Path) -> ImageFileDataset:
    """``folder/train/<class>/*`` and ``folder/test/`` (or ``val/``) as a dataset of ``request.split``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{request.name}: dataset folder {folder} does not exist")
    train_dir = folder / "train"
    if request.is_train:
        if not train_dir.is_dir():
            raise FileNotFoundError(f"{request.name}: dataset folder {folder} has no train/ split (expected "
                                    f"train/ and val/ or test/, each with one folder per class)")
        split_dir = train_dir
    else:
        order = ("val", "test") if request.split == "val" else ("test", "val")
        split_dir = next((folder / s for s in order if (folder / s).is_dir()), None)
        if split_dir is None:
            raise FileNotFoundError(f"{request.name}: dataset folder {folder} has no test/ or val/ split "
                                    f"(expected train/ and val/ or test/, each with one folder per class)")
    # the classes (and so the labels) are the train split's; a test split imported alone uses its own folders
    classes = [p.name for p in class_folders(train_dir if train_dir.is_dir() else split_dir, request.name)]
    return request.files(folder_samples(split_dir, classes, request.name), classes, split_dir)


def _local_imagefolder(request: BuildRequest, spec: DatasetSpec):
    """The ImageFolder form ``<root>/<folder>/{train,test|val}`` when the folder has any of those splits."""
    folder = request.root / (spec.folder or spec.name)
    if any((folder / s).is_dir() for s in ("train", "test", "val")):
        return build_imagefolder(request, folder)
    return None


# ---------------------------------------------------------------------------------------------------------
# torchvision
# ---------------------------------------------------------------------------------------------------------
def _torchvision_dataset(request: BuildRequest, spec: DatasetSpec, looked: list, **kwargs):
    """torchvision's dataset from the data root; downloaded into it when allowed; else DatasetNotFoundError."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.torchvision)
    try:
        return cls(str(request.root), download=False, **kwargs)
    except RuntimeError:
        pass
    if not request.download:
        raise _not_found(request, spec, looked)
    try:
        request.root.mkdir(parents=True, exist_ok=True)
        return cls(str(request.root), download=True, **kwargs)
    except Exception as error:  # URLError, HTTPError, OSError, RuntimeError (checksum)…
        raise _not_found(request, spec, looked, reason=f"torchvision could not download it ({type(error).__name__}: "
                                                       f"{error}).") from error


def _files_from_torchvision(request: BuildRequest, dataset, paths_attr: str, classes=None) -> ImageFileDataset:
    paths = getattr(dataset, paths_attr)
    labels = [int(v) for v in dataset._labels]
    classes = list(classes if classes is not None else dataset.classes)
    return request.files(list(zip(paths, labels)), classes, Path(dataset.root))


# ---------------------------------------------------------------------------------------------------------
# the registered datasets
# ---------------------------------------------------------------------------------------------------------
def _cifar_bases(root: Path, spec: DatasetSpec) -> tuple[Path, Path]:
    """The folders where torchvision's pickled batches of a CIFAR dataset may be: the data root, then the
    dataset's own folder."""
    return root, root / spec.folder


def _locate_cifar(key: str):
    """``locate`` of a CIFAR dataset: its ImageFolder form, else a complete folder of torchvision's batches."""
    batches, files = CIFAR_BATCHES[key]

    def locate(root: Path) -> str | None:
        spec = _REGISTRY[key]
        if has_imagefolder(root / spec.folder):
            return spec.folder
        for base in _cifar_bases(root, spec):
            if all((base / batches / f).is_file() for f in files):
                return (base / batches).relative_to(root).as_posix()
        return None
    return locate


def _cifar(request: BuildRequest, spec: DatasetSpec):
    local = _local_imagefolder(request, spec)
    if local is not None:
        return local
    import torchvision.datasets as tvd

    batches = CIFAR_BATCHES[spec.name][0]
    cls = getattr(tvd, spec.torchvision)
    looked = [request.root / spec.folder / "train", request.root / batches, request.root / spec.folder / batches]
    dataset = None
    for base in _cifar_bases(request.root, spec):
        if (base / batches).is_dir():
            try:
                dataset = cls(str(base), train=request.is_train, download=False)
                break
            except RuntimeError as error:
                raise _not_found(request, spec, looked, reason=f"{base / batches} is incomplete or corrupt "
                                                               f"({error}).") from error
    if dataset is None:
        dataset = _torchvision_dataset(request, spec, looked, train=request.is_train)
    return ArrayDataset(dataset.data, dataset.targets, dataset.classes, image_size=request.image_size,
                        per_class=request.per_class, seed=request.seed, name=request.name,
                        split="train" if request.is_train else "test", root=Path(dataset.root) / batches)


@register_dataset("cifar10", "CIFAR-10: 10 classes, 50,000 train / 10,000 test, 32×32", torchvision="CIFAR10",
                  num_classes=10, aliases=("cifar-10",), locate=_locate_cifar("cifar10"))
def _build_cifar10(request):
    return _cifar(request, _REGISTRY["cifar10"])


@register_dataset("cifar100", "CIFAR-100: 100 classes, 50,000 train / 10,000 test, 32×32", torchvision="CIFAR100",
                  num_classes=100, aliases=("cifar-100",), locate=_locate_cifar("cifar100"))
def _build_cifar100(request):
    return _cifar(request, _REGISTRY["cifar100"])


def _locate_tiny_imagenet(root: Path) -> str | None:
    """``locate`` of Tiny-ImageNet: ``tiny-imagenet-200/`` with both its ``train/`` and ``val/`` splits."""
    folder = _REGISTRY["tiny-imagenet"].folder
    return folder if (root / folder / "train").is_dir() and (root / folder / "val").is_dir() else None


@register_dataset("tiny-imagenet", "Tiny-ImageNet: 200 classes, 500 train / 50 val per class, 64×64",
                  folder="tiny-imagenet-200", num_classes=200, aliases=("tiny-imagenet-200", "tinyimagenet"),
                  locate=_locate_tiny_imagenet)
def _build_tiny_imagenet(request):
    spec = _REGISTRY["tiny-imagenet"]
    base = request.root / spec.folder
    if not base.is_dir():
        raise _not_found(request, spec, [base])
    wnids_file = base / "wnids.txt"
    train_dir = base / "train"
    if wnids_file.is_file():
        classes = sorted({line.strip() for line in wnids_file.read_text().splitlines() if line.strip()})
    elif train_dir.is_dir():
        classes = [p.name for p in class_folders(train_dir, request.name)]
    else:
        raise FileNotFoundError(f"{request.name}: {base} has neither wnids.txt nor a train/ split")
    descriptions = {}
    words = base / "words.txt"
    if words.is_file():
        for line in words.read_text(errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            descriptions[wnid.strip()] = text.strip()
    extra = {}
    if request.is_train:
        if not train_dir.is_dir():
            raise FileNotFoundError(f"{request.name}: {base} has no train/ split (expected "
                                    f"train/<wnid>/images/*.JPEG)")
        samples = folder_samples(train_dir, classes, request.name)
        where = train_dir
    else:
        val_dir = base / "val"
        annotations = val_dir / "val_annotations.txt"
        if annotations.is_file():
            index = {c: i for i, c in enumerate(classes)}
            samples = []
            for number, line in enumerate(annotations.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) < 2 or parts[1].strip() not in index:
                    raise ValueError(f"{request.name}: {annotations} line {number} names no known class "
                                     f"(expected '<file>\\t<wnid>…', got {line[:80]!r})")
                samples.append((val_dir / "images" / parts[0].strip(), index[parts[1].strip()]))
        elif val_dir.is_dir():
            samples = folder_samples(val_dir, classes, request.name)
        else:
            raise _not_found(request, spec, [annotations], reason=f"{base} has no val/ split.")
        where = val_dir
    dataset = request.files(samples, classes, where, **extra)
    dataset.class_descriptions = [descriptions.get(c, c) for c in classes]
    return dataset


@register_dataset("eurosat", "EuroSAT (RGB): 10 land-use classes, 27,000 images 64×64; seeded 80/20 split",
                  torchvision="EuroSAT", num_classes=10)
def _build_eurosat(request):
    spec = _REGISTRY["eurosat"]
    local = _local_imagefolder(request, spec)
    if local is not None:
        return local
    dataset = _torchvision_dataset(request, spec, [request.root / "eurosat" / "2750", request.root / "eurosat" / "train"])
    labels = np.asarray(dataset.targets)
    rng = np.random.default_rng(EUROSAT_SPLIT_SEED)
    chosen = []
    for c in range(len(dataset.classes)):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        n_test = int(round(EUROSAT_TEST_FRACTION * len(members)))
        chosen.extend(members[n_test:] if request.is_train else members[:n_test])
    samples = [dataset.samples[i] for i in sorted(chosen)]
    return request.files(samples, dataset.classes, Path(dataset.root))


def _torchvision_files(key: str, paths_attr: str, train_split: str = "train", test_split: str = "test", **kw):
    def build(request):
        spec = _REGISTRY[key]
        local = _local_imagefolder(request, spec)
        if local is not None:
            return local
        split = train_split if request.is_train else test_split
        dataset = _torchvision_dataset(request, spec, [request.root / spec.folder], split=split, **kw)
        classes = getattr(dataset, "classes", None)
        if classes is None:
            classes = [f"{key}_{i:03d}" for i in range(spec.num_classes or (max(dataset._labels) + 1))]
        return _files_from_torchvision(request, dataset, paths_attr, classes)
    return build


register_dataset("oxford-pets", "Oxford-IIIT Pets: 37 breeds, trainval 3,680 / test 3,669",
                 folder="oxford-iiit-pet", torchvision="OxfordIIITPet", num_classes=37,
                 aliases=("pets", "oxford-iiit-pet", "oxfordpets"))(
    _torchvision_files("oxford-pets", "_images", train_split="trainval"))
register_dataset("food101", "Food-101: 101 classes, 75,750 train / 25,250 test", folder="food-101",
                 torchvision="Food101", num_classes=101, aliases=("food-101",))(
    _torchvision_files("food101", "_image_files"))
register_dataset("dtd", "Describable Textures: 47 classes, partition 1 train 1,880 / test 1,880", folder="dtd",
                 torchvision="DTD", num_classes=47)(_torchvision_files("dtd", "_image_files", partition=1))
register_dataset("flowers102", "Oxford Flowers-102: 102 classes, train 1,020 / test 6,149",
                 folder="flowers-102", torchvision="Flowers102", num_classes=102,
                 aliases=("flowers-102", "flowers"))(_torchvision_files("flowers102", "_image_files"))


@register_dataset("imagenet", "ImageNet-1k: 1,000 classes, train 1.28M / val 50,000 (ImageFolder by wnid)",
                  num_classes=1000, aliases=("imagenet-1k", "imagenet1k"))
def _build_imagenet(request):
    from .imagenet import imagenet_folder_samples, imagenet_wnids

    spec = _REGISTRY["imagenet"]
    base = request.root / spec.folder
    split_dirs = [base / "train"] if request.is_train else [base / "val", base / "test"]
    split_dir = next((d for d in split_dirs if d.is_dir()), None)
    if split_dir is None:
        raise _not_found(request, spec, split_dirs)
    samples, _ = imagenet_folder_samples(split_dir, request.name)
    return request.files(samples, list(imagenet_wnids()), split_dir)


def _locate_first(folders: tuple[str, ...]):
    """``locate`` of a test-only ImageNet variant: the first of its candidate folders that exists."""
    def locate(root: Path) -> str | None:
        return next((f for f in folders if (root / f).is_dir()), None)
    return locate


def _imagenet_variant(key: str, folders: tuple[str, ...], subset: bool):
    def build(request):
        from .imagenet import imagenet_class_index, imagenet_folder_samples, imagenet_wnids

        spec = _REGISTRY[key]
        if request.is_train:
            raise ValueError(f"{key} is an evaluation set with a test split only (train on imagenet, evaluate "
                             f"on {key}); got split={request.split!r}")
        candidates = [request.root / f for f in folders]
        base = next((d for d in candidates if d.is_dir()), None)
        if base is None:
            raise _not_found(request, spec, candidates)
        samples, present = imagenet_folder_samples(base, request.name)
        if not subset:
            return request.files(samples, list(imagenet_wnids()), base)
        index = imagenet_class_index()
        class_subset = sorted(index[w] for w in set(present))
        position = {imagenet_index: k for k, imagenet_index in enumerate(class_subset)}
        dataset = request.files([(p, position[label]) for p, label in samples],
                                [imagenet_wnids()[i] for i in class_subset], base, class_subset=class_subset)
        dataset.source_num_classes = 1000
        return dataset
    return build


_VARIANT_FOLDERS = {"imagenet-v2": ("imagenet-v2/imagenetv2-matched-frequency-format-val",
                                    "imagenetv2-matched-frequency-format-val", "imagenet-v2"),
                    "imagenet-sketch": ("imagenet-sketch/sketch", "imagenet-sketch", "sketch"),
                    "imagenet-a": ("imagenet-a",), "imagenet-r": ("imagenet-r",)}
register_dataset("imagenet-v2", "ImageNet-V2 (matched frequency): 10,000 test images, 1,000 classes",
                 splits=("test",), num_classes=1000, aliases=("imagenetv2",),
                 locate=_locate_first(_VARIANT_FOLDERS["imagenet-v2"]))(
    _imagenet_variant("imagenet-v2", _VARIANT_FOLDERS["imagenet-v2"], subset=False))
register_dataset("imagenet-sketch", "ImageNet-Sketch: 50,889 sketches, 1,000 classes", splits=("test",),
                 num_classes=1000, aliases=("sketch",), locate=_locate_first(_VARIANT_FOLDERS["imagenet-sketch"]))(
    _imagenet_variant("imagenet-sketch", _VARIANT_FOLDERS["imagenet-sketch"], subset=False))
register_dataset("imagenet-a", "ImageNet-A: 7,500 natural adversarial images over 200 ImageNet classes",
                 splits=("test",), num_classes=200, locate=_locate_first(_VARIANT_FOLDERS["imagenet-a"]))(
    _imagenet_variant("imagenet-a", _VARIANT_FOLDERS["imagenet-a"], subset=True))
register_dataset("imagenet-r", "ImageNet-R: 30,000 renditions over 200 ImageNet classes", splits=("test",),
                 num_classes=200, locate=_locate_first(_VARIANT_FOLDERS["imagenet-r"]))(
    _imagenet_variant("imagenet-r", _VARIANT_FOLDERS["imagenet-r"], subset=True))


@register_dataset("synthetic", "procedural coloured gratings (no files); synthetic:N for N classes",
                  folder=None, num_classes=10, locate=lambda root: "")  # needs no files: always present
def _build_synthetic(request):
    from .synthetic import DEFAULT_NUM_CLASSES, SyntheticDataset

    num_classes = request.options.pop("num_classes", None)
    if ":" in request.name:
        text = request.name.split(":", 1)[1]
        if not text.isdigit():
            raise ValueError(f"synthetic:N needs an integer N of classes, got {request.name!r}")
        num_classes = int(text)
    if request.options:
        raise TypeError(f"synthetic got unexpected options {sorted(request.options)}")
    return SyntheticDataset("train" if request.is_train else "test", request.image_size,
                            num_classes=num_classes or DEFAULT_NUM_CLASSES, per_class=request.per_class,
                            seed=request.seed)


# ---------------------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------------------
def build_dataset(name: str, split: str = "train", image_size=224, root=None, per_class: int | None = None,
                  seed: int = 0, download: bool = False, bad_image_policy: str = "error", **options) -> LorspDataset:
    """The dataset ``name`` (see the module docstring), yielding ``(image float32 [3, H, W] in [0, 1], label)``.

    ``per_class=n`` keeps n images per class (seeded by ``seed``; all when None); ``download`` lets torchvision
    fetch a missing dataset into the data root; ``bad_image_policy`` is "error" or "skip"
    (:mod:`lorsp.data.images`). Extra ``options`` go to the dataset (``synthetic``: ``num_classes``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if bad_image_policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"bad_image_policy must be one of {BAD_IMAGE_POLICIES}, got {bad_image_policy!r}")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer))
                                  or per_class < 1):
        raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}")
    size = as_image_size(image_size)
    request = BuildRequest(name, split, size, data_root(root), per_class, int(seed), bool(download),
                           bad_image_policy, dict(options))
    if name.startswith("folder:"):
        text = name[len("folder:"):]
        if not text:
            raise ValueError("folder:PATH needs a path, e.g. folder:/data/my_images")
        path = Path(text).expanduser()
        if not path.is_absolute() and not path.exists() and (request.root / path).exists():
            path = request.root / path
        if not path.exists():
            raise DatasetNotFoundError(f"dataset {name!r}: folder {path.resolve()} does not exist (expected "
                                       f"train/<class>/… and test/ or val/; import data with `{IMPORT_HINT}`)")
        if options:
            raise TypeError(f"dataset {name!r} takes no extra options, got {sorted(options)}")
        return build_imagefolder(request, path.resolve())
    spec = dataset_spec(name.split(":", 1)[0] if name.lower().startswith("synthetic:") else name)
    if spec.name != "synthetic":
        request.name = spec.name
        if options:
            raise TypeError(f"dataset {spec.name!r} takes no extra options, got {sorted(options)}")
        from .packed import open_packed
        packed = open_packed(request)  # a data root made by `lorsp data pack` (lorsp.data.packed), else None
        if packed is not None:
            return packed
    return spec.build(request)
