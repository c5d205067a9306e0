"""The validation split carved from the training images (TrainConfig.val_per_class, lorsp.validation; issue 25):
disjoint from the training subset, seeded, never from the test files, and evaluated into the record."""
from __future__ import annotations

import pytest

from _train_helpers import tiny_config, write_image_folder


def _folder_config(root, **overrides):
    values = dict(dataset=f"folder:{root}", train_per_class=5, test_per_class=3, val_per_class=3, seed=0)
    values.update(overrides)
    return tiny_config(**values)


def test_val_split_is_disjoint_seeded_and_from_the_training_files(tmp_path):
    from lorsp.train import build_datasets
    root = write_image_folder(tmp_path / "data", counts=(("train", 10), ("test", 3)))
    train, val, test = build_datasets(_folder_config(root), with_val=True)
    assert sorted(val.class_counts().values()) == [3, 3]
    assert sorted(train.class_counts().values()) == [5, 5]
    assert not set(train.paths) & set(val.paths)
    assert all("/train/" in p for p in val.paths) and not set(val.paths) & set(test.paths)
    assert val.split == "val" and train.split == "train"
    again = build_datasets(_folder_config(root), with_val=True)
    assert again[1].paths == val.paths and again[0].paths == train.paths
    other = build_datasets(_folder_config(root, seed=1), with_val=True)
    assert other[1].paths != val.paths
    plain_train, plain_test = build_datasets(_folder_config(root, val_per_class=None))
    assert len(plain_train) == 10 and len(plain_test) == len(test)


def test_val_split_of_an_index_made_dataset_is_disjoint():
    from lorsp.train import build_datasets
    train, val, _ = build_datasets(tiny_config(train_per_class=4, val_per_class=2), with_val=True)
    assert len(train) == 4 * train.num_classes and len(val) == 2 * val.num_classes
    assert not set(train.indices) & set(val.indices)
    image, label = val[0]
    assert image.shape[-1] == 32 and label == val.targets[0]


def test_val_per_class_is_validated_and_too_few_images_is_an_error(tmp_path):
    from lorsp.train import build_datasets
    with pytest.raises(ValueError, match="val_per_class"):
        tiny_config(val_per_class=0).validate()
    root = write_image_folder(tmp_path / "data", counts=(("train", 4), ("test", 2)))
    with pytest.raises(ValueError, match=r"val_per_class=4: class 'a'.*only 4 images"):
        build_datasets(_folder_config(root, train_per_class=None, val_per_class=4), with_val=True)


@pytest.mark.parametrize("method", ["lorvp", "none"])
def test_record_says_val_accuracy_and_the_val_images(tmp_path, method):
    from lorsp.train import train
    root = write_image_folder(tmp_path / "data", counts=(("train", 8), ("test", 3)))
    record = train(_folder_config(root, method=method, epochs=2, eval_every=2, prompter_kwargs={}),
                   progress=False)
    assert record["data"]["n_val"] == 6 and record["data"]["n_train"] == 10
    assert record["data"]["provenance"]["val"]["images"] == 6
    assert 0.0 <= record["final_val_accuracy"] <= 1.0
    evaluated = [m for m in record["metrics"] if m.get("test_accuracy") is not None]
    assert [m["val_images"] for m in evaluated] == [6]
    assert "val_accuracy" not in record["metrics"][0]
    assert record["config"]["val_per_class"] == 3


def test_no_val_split_no_val_fields():
    from lorsp.train import train
    record = train(tiny_config(epochs=1), progress=False)
    assert "final_val_accuracy" not in record and "n_val" not in record["data"]
