"""Datasets for the LoRSP experiments: a registry of the paper's datasets, the data root, importing
offline archives, and the ImageNet sample images.

- :func:`build_dataset` (``name, split, image_size, root, per_class, seed, download, bad_image_policy``) →
  a dataset of ``(image float32 [3, H, W] in [0, 1], label)`` with ``.classes``, ``.num_classes``,
  ``.targets``, ``.skipped`` and (ImageNet-A/R) ``.class_subset``; see :mod:`lorsp.data.registry`.
- :func:`list_datasets`, :func:`register_dataset`, :func:`dataset_location` (is a dataset in the data root, and
  where: from its registered layout).
- :func:`data_root` (``LORSP_DATA`` or the checkout's ``data/``; :mod:`lorsp.data.root`).
- :func:`import_data` / :func:`describe_data` behind ``lorsp data import`` / ``lorsp data list``.
- :func:`ensure_smoke_inputs` behind ``lorsp data fetch`` (and the smoke scale's setup): CIFAR-10 and the
  MobileNetV2 weights fetched into the data root where a network exists; :mod:`lorsp.data.fetch`.
- :func:`convert_tflite_mobilenetv2`: the MobileNetV2 weights rebuilt from Google's int8 TFLite file
  (:mod:`lorsp.data.tflite_mobilenetv2`; ``lorsp data import`` and ``lorsp data convert-tflite`` call it).
- :func:`load_sample_images`: the 1,000 ImageNet sample images for figures.
- :func:`class_names`: readable class names (Tiny-ImageNet's and ImageNet's words, not WordNet ids).
- Image reading and the bad-image policy: :mod:`lorsp.data.images`.
"""
from .images import BAD_IMAGE_POLICIES, BadImageError, LorspDataset, load_rgb, make_transform, to_rgb
from .imagenet import (SampleImages, imagenet_class_index, imagenet_samples_dataset, imagenet_wnids,
                       load_sample_images)
from .fetch import SmokeInputs, ensure_smoke_inputs
from .importer import ChecksumError, UnsafeArchiveError, describe_data, import_data
from .registry import (EUROSAT_SPLIT_SEED, EUROSAT_TEST_FRACTION, DatasetNotFoundError, build_dataset,
                       dataset_location, dataset_spec, list_datasets, register_dataset)
from .names import class_names
from .root import data_root, project_root
from .synthetic import SyntheticDataset
from .tflite_mobilenetv2 import TFLiteConversionError, convert_tflite_mobilenetv2

__all__ = ["build_dataset", "class_names", "list_datasets", "register_dataset", "dataset_spec", "dataset_location", "data_root",
           "project_root", "import_data", "describe_data", "ensure_smoke_inputs", "SmokeInputs",
           "load_sample_images", "SampleImages", "imagenet_wnids",
           "imagenet_class_index", "imagenet_samples_dataset", "SyntheticDataset", "LorspDataset",
           "BadImageError", "DatasetNotFoundError", "ChecksumError", "UnsafeArchiveError", "BAD_IMAGE_POLICIES",
           "convert_tflite_mobilenetv2", "TFLiteConversionError",
           "EUROSAT_SPLIT_SEED", "EUROSAT_TEST_FRACTION", "load_rgb", "to_rgb", "make_transform"]
