"""An input pipeline that keeps a GPU fed: decode once, keep uint8 images, resize and normalise on the device.

The plain path (:func:`lorsp.data.build_dataset` + ``torch.utils.data.DataLoader``) decodes every JPEG and
resizes it on CPU workers every epoch; at batch 256 and 224 px that can be slower than the training step it
feeds. Here:

1. :class:`ImageBank` decodes every image once (threads) and keeps it as ``uint8 [3, h, w]`` at its native
   resolution — 1 byte per value instead of 4, and no resize yet — in host memory (pinned on CUDA) or, with
   ``on_device=True`` when it fits, in device memory;
2. :class:`DeviceBatchLoader` draws batches in a seeded order (``torch.Generator``, reseeded per epoch by
   ``set_epoch``), moves the uint8 images to the device, converts them to float in [0, 1] and resizes them
   there with ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` — what torchvision's
   ``v2.Resize(antialias=True)`` does to a float tensor, so the images equal the dataset's up to
   floating-point rounding (the paper's protocol: Resize to image_size × image_size, no crop) — and optionally
   normalises them (``mean``/``std``) and makes them channels-last.

On a CPU the same path serves the trainer (``loader="auto"``): the bank stays in host memory and each batch is
resized as one tensor, instead of a DataLoader transforming image by image. Decoded image files can be kept
on disk (:meth:`ImageBank.from_dataset` ``cache_dir``, :func:`decode_cache_dir`): one uint8 ``.npy`` per set of
files, named by :func:`decoded_key`, memory-mapped by every later run on the same files (a grid's seeds and
runs), so each set is decoded once per machine.

Images of several native sizes are resized group by group (one interpolate call per size in a batch).
:func:`bench_pipeline` compares its images/s with the DataLoader path (``lorsp bench --pipeline DATASET``).
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .images import ArrayDataset, ImageFileDataset, as_image_size, load_rgb

__all__ = ["ImageBank", "DeviceBatchLoader", "resize_on_device", "bench_pipeline", "decode_cache_dir",
           "decoded_key", "DECODE_CACHE_ENV"]


def _to_uint8_chw(image) -> torch.Tensor:
    array = np.array(image)  # a writable copy
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an 8-bit RGB image (H, W, 3), got dtype {array.dtype} shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


DECODE_CACHE_ENV = "LORSP_DECODE_CACHE"
#: bump when what a decoded image holds changes (:func:`lorsp.data.images.load_rgb`'s colour handling): the
#: files decoded by an older version are then no longer found
DECODE_FORMAT = 1


def decode_cache_dir() -> Path:
    """Where decoded images are kept between runs (:meth:`ImageBank.from_dataset` ``cache_dir``):
    ``$LORSP_DECODE_CACHE`` when set, else ``$XDG_CACHE_HOME/lorsp/decoded`` (``~/.cache/lorsp/decoded``) —
    beside the compiled LIF gates, outside the data root, which may be read-only or shared."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get(DECODE_CACHE_ENV) or os.path.join(base, "lorsp", "decoded"))


def decoded_key(paths) -> str:
    """``decoded-<hash>``: names the decoded images of ``paths`` (in order) by each file's path, size and
    modification time, PIL's version (a decoder's update may change pixels) and :data:`DECODE_FORMAT`; a file
    that changes, or another subset or order of files, gives another name. Costs one ``stat`` per file."""
    import PIL

    digest = hashlib.sha256(f"lorsp-decoded|{DECODE_FORMAT}|PIL {PIL.__version__}|{len(paths)}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"\n{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return f"decoded-{digest.hexdigest()[:32]}"


def _read_decoded(path: Path, count: int) -> torch.Tensor | None:
    """The uint8 ``[count, 3, h, w]`` array at ``path``, memory-mapped (read-only), or None when it is
    missing or not such an array."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] != count or array.shape[1] != 3:
        return None
    with warnings.catch_warnings():  # read-only memory: the bank never writes into its images
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _write_decoded(path: Path, stacked: torch.Tensor) -> None:
    """Keep ``stacked`` at ``path`` (atomically: a crash or a second process leaves a whole file or none);
    a folder that cannot be written is a warning, not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=f"{path.stem}.partial-", suffix=".npy", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                np.save(out, stacked.numpy())
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    except OSError as error:
        warnings.warn(f"could not keep the decoded images in {path.parent} ({error}); they will be decoded "
                      f"again next time (set {DECODE_CACHE_ENV} to a writable folder)", RuntimeWarning,
                      stacklevel=3)


class ImageBank:
    """Decoded uint8 images ``[3, h, w]`` at native resolution and their labels.

    Build it with :meth:`from_dataset` (a ``lorsp`` dataset with ``paths`` — image files — or ``images`` —
    a uint8 ``[N, H, W, 3]`` array, e.g. CIFAR) or directly from ``images`` (a list of uint8 ``[3, h, w]``
    tensors, or one ``[N, 3, H, W]`` tensor) and ``labels``. When every image has the same size they are
    stacked into one tensor (``self.stacked``).
    """

    def __init__(self, images, labels, classes=None):
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] != 3:
                raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
            self._init_labels(labels, images.shape[0], classes)
            self.stacked, self.images = images.contiguous(), None  # no copy (it may be memory-mapped)
            self.sizes = [tuple(images.shape[2:])] if images.shape[0] else []
            return
        images = list(images)
        for i, image in enumerate(images):
            if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.dim() == 3
                    and image.shape[0] == 3):
                raise ValueError(f"image {i} must be a uint8 tensor [3, h, w], got "
                                 f"{getattr(image, 'dtype', type(image))} {tuple(getattr(image, 'shape', ()))}")
        self._init_labels(labels, len(images), classes)
        sizes = {tuple(im.shape[1:]) for im in images}
        self.stacked = None
        if len(sizes) == 1:
            self.stacked = torch.stack(images)
            self.images = None
        else:
            self.images = images
        self.sizes = sorted(sizes)

    def _init_labels(self, labels, count: int, classes) -> None:
        labels = torch.as_tensor(list(labels), dtype=torch.long)
        if labels.numel() != count:
            raise ValueError(f"{count} images but {labels.numel()} labels")
        self.labels = labels
        self.classes = list(classes) if classes is not None else None

    @classmethod
    def from_dataset(cls, dataset, indices=None, workers: int | None = None, cache_dir=None) -> "ImageBank":
        """Decode the samples ``indices`` (default: all) of a lorsp dataset once (threads for files).

        ``cache_dir`` (image files only): keep the decoded images there as one uint8 ``.npy`` file named by
        :func:`decoded_key` (the files, their sizes and modification times, PIL's version) and, when a later
        call (another epoch's process, another run of a grid) finds it, memory-map it instead of decoding
        again. Only images of one native size are kept (one array); a file that cannot be read or written
        there is decoded again or not kept, never trusted."""
        indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        targets = list(getattr(dataset, "targets", []))
        if len(targets) != len(dataset):
            raise ValueError(f"{type(dataset).__name__} has no targets list; ImageBank needs a lorsp dataset")
        labels = [int(targets[i]) for i in indices]
        classes = getattr(dataset, "classes", None)
        if getattr(dataset, "images", None) is not None and isinstance(dataset.images, np.ndarray):
            array = dataset.images[indices]
            if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
                raise ValueError(f"{type(dataset).__name__}.images must be uint8 [N, H, W, 3], got "
                                 f"{array.dtype} {array.shape}")
            return cls(torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous(), labels,
                       classes)
        paths = getattr(dataset, "paths", None)
        if paths is None:
            raise ValueError(f"{type(dataset).__name__} has neither image files (.paths) nor a uint8 image array "
                             f"(.images): nothing to decode once (procedural datasets such as 'synthetic' are "
                             f"made on access; use the DataLoader path for them)")
        paths = [paths[i] for i in indices]
        cached = Path(cache_dir) / f"{decoded_key(paths)}.npy" if cache_dir is not None else None
        stacked = _read_decoded(cached, len(paths)) if cached is not None else None
        if stacked is not None:
            return cls(stacked, labels, classes)
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            bank = cls(list(pool.map(lambda path: _to_uint8_chw(load_rgb(path)), paths)), labels, classes)
        if cached is not None and bank.stacked is not None:
            _write_decoded(cached, bank.stacked)
        return bank

    @staticmethod
    def cannot_reproduce(dataset) -> str | None:
        """Why a bank cannot stand in for ``dataset`` (its batches would differ from ``dataset[i]``), or None
        when it can: only the plain image-file and uint8-array datasets read their images unaltered; a dataset
        that makes or alters its images on access, such as ``synthetic`` or a distribution shift, must be read."""
        if type(dataset).__getitem__ not in (ArrayDataset.__getitem__, ImageFileDataset.__getitem__):
            return (f"{type(dataset).__name__} ({getattr(dataset, 'name', '') or 'unnamed'}) makes its images on "
                    f"access, so there is nothing to decode once")
        return None

    @staticmethod
    def estimate_nbytes(dataset, sample: int = 64) -> int | None:
        """The bytes :meth:`from_dataset` would take for ``dataset``, without decoding it: exact for a uint8
        array, else the mean of ``sample`` files' header sizes (seeded draw) times the number of files; None
        when a sampled header cannot be read or the dataset has neither."""
        from PIL import Image

        images = getattr(dataset, "images", None)
        if isinstance(images, np.ndarray):
            return int(images.nbytes)
        paths = getattr(dataset, "paths", None)
        if paths is None:
            return None
        if not paths:
            return 0
        picks = np.random.default_rng(0).choice(len(paths), size=min(sample, len(paths)), replace=False)
        try:
            sizes = []
            for i in picks:
                with Image.open(paths[int(i)]) as image:
                    sizes.append(3 * image.size[0] * image.size[1])
        except (OSError, ValueError):
            return None
        return int(sum(sizes) / len(sizes) * len(paths))

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def nbytes(self) -> int:
        if self.stacked is not None:
            return self.stacked.numel()
        return sum(im.numel() for im in self.images)

    def to(self, device, pin_memory: bool = False) -> "ImageBank":
        """The bank with its images on ``device`` (or pinned in host memory for fast copies)."""
        def move(t):
            return t.pin_memory() if pin_memory else t.to(device)

        bank = ImageBank.__new__(ImageBank)
        bank.labels, bank.classes, bank.sizes = self.labels, self.classes, self.sizes
        bank.stacked = move(self.stacked) if self.stacked is not None else None
        bank.images = [move(im) for im in self.images] if self.images is not None else None
        return bank

    def batch(self, index: torch.Tensor):
        """``(list of (positions, uint8 [k, 3, h, w]) per native size, labels)`` for the samples ``index``."""
        labels = self.labels[index]
        if self.stacked is not None:
            return [(None, self.stacked[index.to(self.stacked.device)])], labels
        groups = defaultdict(list)
        for position, i in enumerate(index.tolist()):
            groups[tuple(self.images[i].shape[1:])].append(position)
        out = []
        for size, positions in groups.items():
            out.append((positions, torch.stack([self.images[int(index[p])] for p in positions])))
        return out, labels


def resize_on_device(images_uint8: torch.Tensor, image_size, device=None, dtype=torch.float32) -> torch.Tensor:
    """uint8 ``[N, 3, h, w]`` → float ``[N, 3, H, W]`` in [0, 1] on ``device``: ``·(1/255)`` then bilinear
    antialiased resize (as ``v2.ToDtype(scale=True)`` + ``v2.Resize(antialias=True)`` on tensors)."""
    size = as_image_size(image_size)
    x = images_uint8.to(device if device is not None else images_uint8.device, non_blocking=True)
    x = x.to(dtype).mul_(1.0 / 255)  # as torchvision's ToDtype(scale=True): the same floats
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(0.0, 1.0)  # as the dataset's transform: resizing can round a white pixel to 1 + 6e-7
    return x


class DeviceBatchLoader:
    """Batches ``(x [B, 3, H, W] float on device, y [B] long on device)`` from an :class:`ImageBank`.

    ``shuffle`` uses ``torch.Generator().manual_seed(seed + epoch)`` (call :meth:`set_epoch` each epoch, as
    with a DistributedSampler); ``mean``/``std`` normalise on the device when given; ``channels_last`` returns
    channels-last tensors. ``rank``/``world_size`` take every world_size-th sample of the permutation.
    ``sampler`` (an iterable of sample indices, read anew each epoch, such as the trainer's
    :class:`lorsp.train.EpochSampler`) gives the order instead, so that batches are the DataLoader's with the
    same sampler; ``shuffle``, ``seed``, ``rank`` and ``world_size`` are then unused.
    ``draw_like_dataloader``: draw one int64 from torch's global generator at the start of each pass, as a
    DataLoader without a ``generator`` does (its workers' base seed), so that whatever draws random numbers
    after it (a dropout prompter's masks in evaluation) draws the same ones as behind that DataLoader.
    """

    def __init__(self, bank: ImageBank, batch_size: int, image_size, device="cpu", shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, mean=None, std=None, channels_last: bool = False,
                 dtype=torch.float32, rank: int = 0, world_size: int = 1, sampler=None,
                 draw_like_dataloader: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.bank, self.batch_size = bank, batch_size
        self.image_size = as_image_size(image_size)
        self.device = torch.device(device)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.channels_last, self.dtype = channels_last, dtype
        self.rank, self.world_size = int(rank), int(world_size)
        self.sampler = sampler
        self.draw_like_dataloader = bool(draw_like_dataloader)
        self.epoch = 0
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (or neither)")
        self.mean = None if mean is None else torch.tensor(mean, dtype=dtype, device=self.device).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=dtype, device=self.device).view(1, -1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> torch.Tensor:
        n = len(self.bank)
        if self.sampler is not None:
            order = torch.as_tensor(list(self.sampler), dtype=torch.long)
            if order.numel() and not 0 <= int(order.min()) <= int(order.max()) < n:
                raise IndexError(f"the sampler gave indices outside [0, {n}) for a bank of {n} images")
            return order
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(n)
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        n = len(self._order())
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        if self.draw_like_dataloader:
            torch.empty((), dtype=torch.int64).random_()
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            if self.drop_last and len(index) < self.batch_size:
                break
            groups, labels = self.bank.batch(index)
            if len(groups) == 1 and groups[0][0] is None:
                x = resize_on_device(groups[0][1], self.image_size, self.device, self.dtype)
            else:
                x = torch.empty((len(index), 3, *self.image_size), dtype=self.dtype, device=self.device)
                for positions, images in groups:
                    x[torch.as_tensor(positions, device=self.device)] = resize_on_device(
                        images, self.image_size, self.device, self.dtype)
            if self.mean is not None:
                x = x.sub_(self.mean).div_(self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, labels.to(self.device, non_blocking=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_pipeline(dataset_name: str, batch_size: int = 256, image_size=224, device="auto", max_images: int = 512,
                   num_workers: int = 2, root=None, split: str = "train", seed: int = 0, epochs: int = 2) -> dict:
    """Images/s of the plain DataLoader path vs :class:`DeviceBatchLoader` on ``dataset_name`` (first
    ``max_images`` samples), each over ``epochs`` epochs after one warm-up epoch, the batches moved to
    ``device`` and synchronised. The device path's one-time decode is timed separately (``decode_s``)."""
    from .registry import build_dataset

    device = torch.device("cuda" if (device in (None, "auto") and torch.cuda.is_available()) else
                          ("cpu" if device in (None, "auto") else device))
    dataset = build_dataset(dataset_name, split=split, image_size=image_size, root=root)
    indices = list(range(min(len(dataset), int(max_images))))
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         pin_memory=device.type == "cuda", drop_last=False,
                                         persistent_workers=num_workers > 0,
                                         generator=torch.Generator().manual_seed(seed))

    def run_epochs(iterable_for_epoch):
        seen = 0
        for epoch in range(epochs + 1):
            if epoch == 1:
                _sync(device)
                start, seen = time.perf_counter(), 0
            for x, y in iterable_for_epoch(epoch):
                x = x.to(device, non_blocking=True)
                seen += x.shape[0]
            _sync(device)
        return seen / (time.perf_counter() - start)

    dataloader_ips = run_epochs(lambda epoch: loader)
    started = time.perf_counter()
    bank = ImageBank.from_dataset(dataset, indices)
    decode_s = time.perf_counter() - started
    bank_device = bank.to(device, pin_memory=False) if device.type == "cuda" else bank
    device_loader = DeviceBatchLoader(bank_device, batch_size, image_size, device, shuffle=True, seed=seed)

    def device_epoch(epoch):
        device_loader.set_epoch(epoch)
        return device_loader

    device_ips = run_epochs(device_epoch)
    return {"dataset": dataset_name, "split": split, "images": len(indices), "batch_size": batch_size,
            "image_size": image_size, "device": str(device), "num_workers": num_workers, "epochs": epochs,
            "dataloader_images_per_s": dataloader_ips, "device_pipeline_images_per_s": device_ips,
            "speedup": device_ips / dataloader_ips, "decode_s": decode_s, "bank_mb": bank.nbytes / 2 ** 20,
            "native_sizes": [list(s) for s in bank.sizes[:5]] + (["…"] if len(bank.sizes) > 5 else [])}
