"""The window's data pack (:mod:`lorsp.data.pack`): verified, holding the MobileNetV2 weights and the plan's images,
and made the data root with no hub access; :class:`WindowError` when the window cannot run."""
from __future__ import annotations

import os
from pathlib import Path

from .plan import WEIGHTS_FILE, window_setup


class WindowError(RuntimeError):
    """The window cannot run: no pack, no weights in it, no GPU where one was asked for."""


def check_pack(pack) -> dict:
    """Verify the pack (every file's sha256) and that it holds the MobileNetV2 weights; return its manifest.
    :class:`WindowError` names the missing file and how to make it — there is no hub fallback."""
    from ..data.packed import PackError, verify_pack

    pack = Path(pack)
    weights = pack / "weights" / WEIGHTS_FILE
    try:
        manifest = verify_pack(pack)
    except PackError as error:
        raise WindowError(f"{error}. Make the pack where the data are: `lorsp data import ../shared/data` then "
                          f"`lorsp data pack {pack}`") from error
    if WEIGHTS_FILE not in manifest.get("weights", {}) or not weights.is_file():
        raise WindowError(f"the pack {pack} holds no MobileNetV2 weights ({weights} is missing); the window refuses "
                          f"to run rather than fall back to a hub download. Import the weights into the data root "
                          f"(`lorsp data import ../shared/data`) and make the pack again (`lorsp data pack {pack}`)")
    return manifest


def prepare_window(pack, plan, smoke: bool, device: str) -> dict:
    """Check the pack (and that it holds the plan's images), make it the data root with no hub access, and
    check the device; return the pack's manifest."""
    import torch

    manifest = check_pack(pack)
    os.environ["LORSP_DATA"] = str(Path(pack).resolve())  # the pack is the data root: runs keep path-free keys
    os.environ["HF_HUB_OFFLINE"] = "1"  # timm never reaches for the hub here
    os.environ.setdefault("LORSP_OFFLINE", "1")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WindowError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device (run the "
                          f"smoke plan on a CPU with DEVICE=cpu SMOKE=1)")
    needed = {item["run"]["dataset"] for item in plan}
    for name, counts in window_setup(smoke, device).datasets.items():
        held = manifest["datasets"].get(name, {}).get("splits", {})
        for split, key in (("train", "train_per_class"), ("test", "test_per_class")):
            has = held.get(split, {}).get("per_class", 0)
            if name in needed and has < counts[key]:
                raise WindowError(f"the pack {pack} holds {has} {split} images per class of {name}, the plan needs "
                                  f"{counts[key]}: make the pack with `lorsp data pack`"
                                  f"{' --dataset ' + name + '=TRAIN/TEST' if smoke else ''}")
    return manifest
