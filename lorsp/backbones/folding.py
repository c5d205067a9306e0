"""A faster frozen backbone with the same outputs (:func:`fold_frozen_backbone`): batch norms folded into their
convolutions, TensorFlow's "same" padding fixed for one input size, channels-last memory."""
from __future__ import annotations

import torch
from torch import nn


class StaticPadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding fixed for one input size: the (possibly asymmetric: a
    stride-2 3×3 convolution of an even-sized input pads 0 before and 1 after) zero padding of timm's
    ``Conv2dSame``, computed once instead of on every call. Another input size is a ValueError, since its
    padding would differ."""

    def __init__(self, conv: nn.Conv2d, input_hw: tuple[int, int], pads: tuple[int, int, int, int]):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self.input_hw, self.pads = tuple(input_hw), tuple(pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_hw:
            raise ValueError(f"this backbone's 'same' padding was fixed for {self.input_hw[0]}×{self.input_hw[1]} "
                             f"inputs of this layer, got {x.shape[-2]}×{x.shape[-1]}; build the backbone for the "
                             f"new image size")
        return nn.functional.conv2d(nn.functional.pad(x, self.pads), self.weight, self.bias, self.stride, 0,
                                    self.dilation, self.groups)


def _input_sizes(model: nn.Module, names: set, image_size: int) -> dict:
    sizes = {}

    def remember(module, args, name):  # returns None: the arguments go on unchanged
        sizes.setdefault(name, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(lambda module, args, name=n: remember(module, args, name))
             for n, m in model.named_modules() if n in names]
    try:
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def static_same_padding(model: nn.Module, image_size: int) -> int:
    """Replace timm's dynamically padded ``Conv2dSame`` layers by convolutions whose "same" padding is fixed for
    ``image_size`` inputs (a plain ``Conv2d`` where it is symmetric, else :class:`StaticPadConv2d`); the outputs
    are identical. Returns how many layers were replaced."""
    from timm.layers.padding import get_same_padding

    names = {n for n, m in model.named_modules() if type(m).__name__ == "Conv2dSame"}
    if not names:
        return 0
    for name, (height, width) in _input_sizes(model, names, image_size).items():
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        conv = getattr(parent, attribute)
        pad_h = get_same_padding(height, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pad_w = get_same_padding(width, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        if pads[0] == pads[1] and pads[2] == pads[3]:
            static = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                               (pads[2], pads[0]), conv.dilation, conv.groups, conv.bias is not None,
                               device=conv.weight.device, dtype=conv.weight.dtype)
            static.weight, static.bias = conv.weight, conv.bias
        else:
            static = StaticPadConv2d(conv, (int(height), int(width)), pads)
        setattr(parent, attribute, static)
    return len(names)


# (convolution, batch norm) attribute pairs of timm's EfficientNet family (MobileNetV2 among them), where the
# block applies the batch norm (with its activation, timm's BatchNormAct2d) straight to the convolution's output
_CONV_BN_PAIRS = {
    "EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "EdgeResidual": (("conv_exp", "bn1"), ("conv_pwl", "bn2")),
}


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each eval-mode batch norm of timm's EfficientNet-family blocks into the convolution before it
    (w' = w γ/√(σ² + ε), b' = β − μ γ/√(σ² + ε)), keeping its activation: one pass over the activations less per
    layer, forward and backward, with outputs equal to float rounding. For frozen backbones only (the running
    statistics are baked in). Returns how many batch norms were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in _CONV_BN_PAIRS.get(type(module).__name__, ()):
            conv, norm = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if not isinstance(conv, nn.Conv2d) or type(norm).__name__ not in ("BatchNorm2d", "BatchNormAct2d") \
                    or not norm.track_running_stats or norm.running_mean is None:
                continue
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                                norm.eps, norm.weight, norm.bias)
            conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
            conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
            rest = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None))
                    if m is not None and not isinstance(m, nn.Identity)]
            setattr(module, bn_name, nn.Sequential(*rest) if rest else nn.Identity())
            folded += 1
    return folded


def weights_fingerprint(model: nn.Module) -> float:
    """The sum of |w| over the frozen parameters as loaded (before :func:`fold_frozen_backbone` rewrote them):
    what a checkpoint compares to tell whether a resumed run has the same backbone weights."""
    stored = getattr(model, "lorsp_weights_fingerprint", None)
    if stored is not None:
        return float(stored)
    with torch.no_grad():
        return float(sum(p.detach().double().abs().sum().item() for p in model.parameters() if not p.requires_grad))


def _to_channels_last(module: nn.Module, args):
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def fold_frozen_backbone(model: nn.Module, image_size: int | None = None, channels_last: bool = True) -> nn.Module:
    """A frozen backbone made cheaper with the same outputs (to float rounding), in place: batch norms folded
    into their convolutions (:func:`fold_batchnorm`) and, given the input ``image_size``, TensorFlow-style "same"
    padding fixed for it (:func:`static_same_padding`). Where that folded anything (timm's EfficientNet family:
    MobileNetV2), ``channels_last`` also stores the weights channels-last and turns each input so (a forward
    pre-hook on the first convolution), which oneDNN's depthwise convolutions run much faster on a CPU. The model must stay frozen and
    in eval mode; its :func:`weights_fingerprint` is that of the weights as loaded. ``benchmarks/README.md`` has
    the timings (``benchmarks/backbone_variants.py``)."""
    model.lorsp_weights_fingerprint = weights_fingerprint(model)
    model.eval()
    folded = fold_batchnorm(model)
    if image_size is not None:
        static_same_padding(model, int(image_size))
    if folded and channels_last:
        model.to(memory_format=torch.channels_last)
        stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))  # the first layer (also when called
        stem.register_forward_pre_hook(_to_channels_last)                     # through forward_features)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
