"""Reading images the way every ``lorsp`` dataset does, and the dataset classes that hold them.

Every image becomes an RGB ``float32`` tensor ``[3, H, W]`` in ``[0, 1]``, resized to ``image_size`` × ``image_size``
with no crop (the paper's protocol, method.md: "images 224×224 (Resize, no crop)"), through torchvision's
transforms v2: ``ToImage → ToDtype(float32, scale=True) → Resize((H, W), antialias=True)`` (bilinear). The
prompters (Eqs. 4–7) act on these pixels before the backbone's normalisation.

Colour modes (:func:`to_rgb`): grayscale (``L``, ``1``), CMYK, YCbCr and palette images are converted to RGB;
images with transparency (``RGBA``, ``LA``, ``PA``, a palette with a transparent colour) are composited over a
white background; 16-bit and 32-bit grayscale (``I;16``, ``I``) are scaled to 8 bits by their bit depth
(``/257`` for 16 bit) rather than clipped; float images (``F``) in [0, 1] are scaled by 255.

Bad files (``bad_image_policy``):

- ``"error"`` (default): a file that cannot be decoded raises :class:`BadImageError` naming the file and the
  problem when it is read (the first epoch reads every image, so a bad file stops a run in its first epoch).
- ``"skip"``: every selected file is fully decoded once when the dataset is built (threads; the cost of one
  pass over the selected images, i.e. small for ``per_class`` subsets); files that fail are left out and
  listed in ``dataset.skipped`` as ``(path, reason)`` pairs, and with ``per_class=n`` the next files of that
  class (in the seeded order) take their place. The length, labels and skipped list are therefore fixed
  before training starts and the same in every DataLoader worker and every DDP rank. A file that breaks
  after that check still raises :class:`BadImageError`.

Hidden files (names starting with ``.``, e.g. macOS ``._x.jpg``) and files without an image extension are
ignored when folders are listed.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
BAD_IMAGE_POLICIES = ("error", "skip")

__all__ = ["BadImageError", "to_rgb", "load_rgb", "check_image", "make_transform", "as_image_size",
           "is_image_file", "list_images", "select_per_class", "LorspDataset", "ImageFileDataset",
           "ArrayDataset", "IMAGE_EXTENSIONS", "BAD_IMAGE_POLICIES"]


class BadImageError(OSError):
    """An image file that cannot be read; ``.path`` is the file and ``.reason`` the problem."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"bad image file {self.path}: {reason} (use bad_image_policy='skip' / "
                         f"--bad-images skip to leave such files out and count them)")

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


def as_image_size(image_size) -> tuple[int, int]:
    """``224`` or ``(224, 224)`` → ``(H, W)``; anything else is a ValueError naming the value."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif isinstance(image_size, Sequence) and len(image_size) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be a positive integer or an (H, W) pair, got {image_size!r}")
    if min(size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return size


def is_image_file(path) -> bool:
    name = os.path.basename(str(path))
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted; hidden files and other extensions ignored)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_image_file(f))
    return found


def _white_composite(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of any PIL image (see the module docstring for each colour mode)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        return _white_composite(image)
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16"):
            array = array / 257.0
        elif mode == "I":
            peak = float(array.max()) if array.size else 0.0
            array = array / 257.0 if peak > 255 and peak <= 65535 else (array * 255.0 / peak if peak > 65535
                                                                        else array)
        else:  # F
            peak = float(array.max()) if array.size else 0.0
            array = array * 255.0 if peak <= 1.0 else array
        gray = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ValueError(f"cannot convert image mode {mode!r} to RGB ({error})") from error


def load_rgb(path) -> Image.Image:
    """The file at ``path`` decoded and converted to RGB; :class:`BadImageError` naming the file otherwise."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                raise ValueError(f"empty image ({image.width}×{image.height})")
            return to_rgb(image).copy()
    except BadImageError:
        raise
    except FileNotFoundError as error:
        raise BadImageError(path, f"file not found ({error})") from error
    except Image.UnidentifiedImageError as error:
        raise BadImageError(path, "not an image (PIL cannot identify the file format)") from error
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error... on corrupt data
        message = str(error)
        if "truncated" in message.lower():
            reason = f"truncated image data ({message})"
        else:
            reason = f"{type(error).__name__}: {message}"
        raise BadImageError(path, reason) from error


def check_image(path) -> str | None:
    """None when ``path`` decodes to an RGB image, else the reason it does not (used by the "skip" policy)."""
    try:
        load_rgb(path)
    except BadImageError as error:
        return error.reason
    return None


def make_transform(image_size) -> Callable:
    """PIL image / HWC uint8 array → float32 ``[3, H, W]`` in [0, 1] at ``image_size`` (Resize, no crop)."""
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Resize(as_image_size(image_size), antialias=True), v2.Lambda(_clamp_unit)])


def _clamp_unit(image: torch.Tensor) -> torch.Tensor:
    """Resizing can round a white pixel to 1 + 6e-7: keep the promised [0, 1] exactly."""
    return image.clamp_(0.0, 1.0)


def select_per_class(labels: Sequence[int], per_class: int | None, seed: int,
                     check: Callable[[int], str | None] | None = None, num_classes: int | None = None,
                     workers: int | None = None) -> tuple[list[int], list[tuple[int, str]]]:
    """Indices of ``n = per_class`` samples of each class (all when None), drawn in a seeded order
    (``numpy.random.default_rng(seed)``, one permutation per class in class order), sorted. With ``check``
    (index → reason or None), failing samples are left out, reported as ``(index, reason)``, and replaced by
    the next ones of their class. A class with fewer than ``n`` samples gives all it has."""
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer))
                                  or per_class < 1):
        raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}")
    labels = np.asarray(list(labels), dtype=np.int64)
    classes = range(int(num_classes) if num_classes is not None else (int(labels.max()) + 1 if labels.size else 0))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    rejected: list[tuple[int, str]] = []
    workers = workers or min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers) if check is not None and workers > 1 else None
    try:
        for c in classes:
            members = np.flatnonzero(labels == c)
            if per_class is not None:
                members = members[rng.permutation(len(members))]
            if check is None:
                chosen.extend(int(i) for i in members[:per_class])
                continue
            need = len(members) if per_class is None else int(per_class)
            position = 0
            while need > 0 and position < len(members):
                batch = [int(i) for i in members[position:position + need]]
                position += len(batch)
                reasons = list(pool.map(check, batch)) if pool is not None and len(batch) > 16 else \
                    [check(i) for i in batch]
                for index, reason in zip(batch, reasons):
                    if reason is None:
                        chosen.append(index)
                        need -= 1
                    else:
                        rejected.append((index, reason))
    finally:
        if pool is not None:
            pool.shutdown()
    return sorted(chosen), rejected


class LorspDataset(torch.utils.data.Dataset):
    """Base of every ``lorsp`` dataset: yields ``(image float32 [3, H, W] in [0, 1], label int)``.

    Attributes: ``name``, ``split`` ("train" | "test"), ``classes`` (names, index = label), ``num_classes``,
    ``targets`` (the label of every sample), ``image_size`` (H, W), ``skipped`` (``(path, reason)`` of the
    files left out by the "skip" policy), ``root`` (where the files are, or None), ``class_subset`` (None,
    or for ImageNet-A/R the indices of their classes among the 1,000 ImageNet logits: label ``k`` is ImageNet
    class ``class_subset[k]``, and accuracy is taken over those logits only).
    """

    name: str = ""
    split: str = "train"
    class_subset: list[int] | None = None
    root: Path | None = None

    def __init__(self):
        self.skipped: list[tuple[str, str]] = []
        self.classes: list[str] = []
        self.targets: list[int] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def content_fingerprint(self) -> str | None:
        """A hash of what every sample's image tensor depends on (its source, label and the resolution), or
        ``None`` when a dataset cannot say: two datasets with the same fingerprint yield the same samples in
        the same order, whatever seed drew them (e.g. ``per_class`` that keeps every image of each class).
        The feature cache shared by runs (``TrainConfig.feature_cache_dir``) is keyed by it."""
        return None

    def _fingerprint(self, *parts: bytes) -> str:
        digest = hashlib.sha256(f"{type(self).__name__}|{self.name}|{self.split}|{tuple(self.image_size)}|"
                                f"{self.targets}".encode())
        for part in parts:
            digest.update(part)
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.targets)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=self.num_classes)
        return {name: int(n) for name, n in zip(self.classes, counts)}

    def __repr__(self) -> str:
        extra = f", skipped={len(self.skipped)}" if self.skipped else ""
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"num_classes={self.num_classes}, image_size={getattr(self, 'image_size', None)}{extra})")


class ImageFileDataset(LorspDataset):
    """Images read from files: ``samples`` is a list of ``(path, label)``; see :func:`select_per_class` for
    ``per_class``/``seed`` and the module docstring for ``bad_image_policy``."""

    def __init__(self, samples: Sequence[tuple], classes: Sequence[str], image_size=224, per_class=None,
                 seed: int = 0, bad_image_policy: str = "error", name: str = "", split: str = "train",
                 root=None, class_subset: Sequence[int] | None = None):
        super().__init__()
        if bad_image_policy not in BAD_IMAGE_POLICIES:
            raise ValueError(f"bad_image_policy must be one of {BAD_IMAGE_POLICIES}, got {bad_image_policy!r}")
        self.name, self.split, self.root = name, split, (Path(root) if root is not None else None)
        self.classes = list(classes)
        self.image_size = as_image_size(image_size)
        self.bad_image_policy = bad_image_policy
        self.class_subset = list(class_subset) if class_subset is not None else None
        paths = [str(p) for p, _ in samples]
        labels = [int(label) for _, label in samples]
        check = (lambda i: check_image(paths[i])) if bad_image_policy == "skip" else None
        keep, rejected = select_per_class(labels, per_class, seed, check=check, num_classes=len(self.classes))
        self.paths = [paths[i] for i in keep]
        self.targets = [labels[i] for i in keep]
        self.skipped = [(paths[i], reason) for i, reason in rejected]
        self.transform = make_transform(self.image_size)

    @property
    def samples(self) -> list[tuple[str, int]]:
        return list(zip(self.paths, self.targets))

    def content_fingerprint(self) -> str:
        """The files (their paths, in order), labels and resolution (:meth:`LorspDataset.content_fingerprint`)."""
        return self._fingerprint("\n".join(self.paths).encode())

    def __getitem__(self, index: int):
        return self.transform(load_rgb(self.paths[index])), self.targets[index]


class ArrayDataset(LorspDataset):
    """Images held in memory as a uint8 ``[N, H, W, 3]`` array (e.g. CIFAR's python batches)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], classes: Sequence[str], image_size=224,
                 per_class=None, seed: int = 0, name: str = "", split: str = "train", root=None):
        super().__init__()
        self.name, self.split, self.root = name, split, (Path(root) if root is not None else None)
        self.classes = list(classes)
        self.image_size = as_image_size(image_size)
        labels = [int(v) for v in labels]
        keep, _ = select_per_class(labels, per_class, seed, num_classes=len(self.classes))
        self.images = np.ascontiguousarray(np.asarray(images)[keep])
        self.targets = [labels[i] for i in keep]
        self.transform = make_transform(self.image_size)

    def content_fingerprint(self) -> str:
        """The pixels, labels and resolution (:meth:`LorspDataset.content_fingerprint`)."""
        return self._fingerprint(self.images.tobytes())

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.targets[index]
