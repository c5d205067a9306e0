"""Shared settings of the engine tests (test_train, test_cli, test_distributed)."""
from __future__ import annotations

import sys

TINY_BACKBONE = "resnet10t"  # a tiny timm model, random weights, any input size


def tiny_config(**overrides):
    """A smoke-size TrainConfig on `synthetic` (CPU, 32 px, 2 epochs, random tiny backbone)."""
    from lorsp.train import TrainConfig
    values = dict(backbone=TINY_BACKBONE, dataset="synthetic", method="lorsp", epochs=2, batch_size=8,
                  lr=0.05, image_size=32, train_per_class=4, test_per_class=2, device="cpu", random_init=True,
                  prompter_kwargs=dict(groups=2, rank=2))
    values.update(overrides)
    return TrainConfig(**values)


def cli_command() -> list:
    """argv prefix that runs the `lorsp` CLI in a subprocess."""
    return [sys.executable, "-m", "lorsp"]


def write_image_folder(root, counts=(("train", 6), ("test", 3)), classes=("a", "b")):
    """``root/<split>/<class>/<i>.png`` for ``(split, count)`` in ``counts``: random RGB images of three native
    sizes, a little class signal in one channel; returns ``root``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in counts:
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                array = rng.integers(0, 256, (30 + 7 * (i % 3), 40, 3), dtype=np.uint8)
                array[..., label % 3] //= 3
                Image.fromarray(array).save(root / split / name / f"{i}.png")
    return root
