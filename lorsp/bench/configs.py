"""What the bench times: backbones built as the trainer builds them, prompters by method name, and one
configuration's callables (a training step, the prompt alone, the tensors autograd saves)."""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

SPECIAL_METHODS = ("lp", "lp-cached", "lorsp-fused", "lorsp-compiled", "lorsp-reference")
DEFAULT_METHODS = ("lorsp-reference", "lorsp", "lorsp-fused", "lorsp-compiled", "lorvp", "lp", "lp-cached")


def bench_backbone(name: str, image_size: int, random_init: bool, data_root=None):
    """``(model, info, note)`` from :func:`lorsp.backbones.create_backbone`; real weights when present (data
    root, timm cache), else random weights with a note. ViT-style models get ``img_size=image_size``."""
    from ..backbones import WeightsUnavailableError, create_backbone, fold_frozen_backbone

    def make(random):
        try:
            model, info = create_backbone(name, random_init=random, data_root=data_root, img_size=image_size)
        except TypeError:  # models without an img_size argument (CNNs)
            model, info = create_backbone(name, random_init=random, data_root=data_root)
        return fold_frozen_backbone(model, image_size), info  # as the trainer runs it

    if random_init:
        model, info = make(True)
        return model, info, "random weights (--random-init)"
    try:
        model, info = make(False)
        return model, info, ""
    except WeightsUnavailableError as error:
        model, info = make(True)
        return model, info, f"random weights: no pretrained weights available ({str(error)[:120]}…)"


def _lorsp_with_backend(image_size, backend, **kwargs):
    """LoRSP with its fused LIF gate on ``backend`` (``eager`` or ``compile``, :class:`LoRSPPrompter`'s option)."""
    from ..prompters import build_prompter

    kwargs = {**kwargs, "fused": True, "backend": backend}
    return build_prompter("lorsp", image_size=image_size, **kwargs), f"lorsp(fused=True, backend={backend!r})"


def method_prompter(method: str, image_size: int, prompter_kwargs: dict):
    """``(prompter or None, source)``."""
    from ..prompters import build_prompter, list_prompters

    if method in ("lp", "lp-cached"):
        return None, "no prompt"
    if method == "lorsp-fused":
        return _lorsp_with_backend(image_size, "eager", **prompter_kwargs.get("lorsp", {}))
    if method == "lorsp-compiled":
        return _lorsp_with_backend(image_size, "compile", **prompter_kwargs.get("lorsp", {}))
    if method == "lorsp-reference":
        kwargs = {**prompter_kwargs.get("lorsp", {}), "fused": False}
        return build_prompter("lorsp", image_size=image_size, **kwargs), "lorsp(fused=False): autograd through LIF"
    registered = list_prompters()
    if method in registered:
        return build_prompter(method, image_size=image_size, **prompter_kwargs.get(method, {})), "registry"
    raise ValueError(f"unknown method {method!r}; expected a registered prompter ({', '.join(registered)}) "
                     f"or one of {', '.join(SPECIAL_METHODS)}")


def build_model(backbone, info, prompter, num_classes: int):
    """:class:`lorsp.model.PromptedModel` with a linear head (``prompter=None`` for LP and the floor)."""
    from ..model import PromptedModel

    return PromptedModel(backbone, prompter, head="linear", num_classes=num_classes, mean=info.mean, std=info.std)


# ---------------------------------------------------------------------------------------------------------
# one configuration: callables for a step, the prompt alone and the saved-tensor count
# ---------------------------------------------------------------------------------------------------------
class Configuration:
    """One configuration of the bench (a method on a backbone, batch and size): its optimizer, and the callables
    the rounds time: a training step (:meth:`step`), the prompt alone (:meth:`prompt_step`) and the tensors
    autograd saves (:meth:`saved_mb`)."""

    def __init__(self, method, model, prompter, x, y, device, amp_dtype, sources, channels_last):
        self.method, self.model, self.prompter = method, model, prompter
        self.x, self.y, self.device, self.amp_dtype = x, y, device, amp_dtype
        self.sources = sources
        self.channels_last = channels_last
        self.times: list[float] = []
        self.prompt_times: list[float] = []
        self.features = None
        self.optimizer = None
        if method == "floor":
            return
        params = model.trainable_parameters()
        if method == "lp-cached":
            with torch.no_grad(), self._autocast():
                self.features = model.features(x).float()
            params = [p for p in model.head.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
        model.train()  # the frozen backbone stays in eval mode (PromptedModel.train)
        if prompter is not None:
            self.prompt_grad = torch.ones_like(x)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def forward_loss(self):
        """The loss of one step (forward only)."""
        if self.method == "floor":
            x = self.x.detach().requires_grad_()
            with self._autocast():
                features = self.model.features(x)  # no prompt; the head is not used
            return features.float().sum()
        if self.method == "lp":
            with torch.no_grad(), self._autocast():
                features = self.model.features(self.x)
            return F.cross_entropy(self.model.head(features.float()).float(), self.y)
        if self.method == "lp-cached":
            return F.cross_entropy(self.model.head(self.features).float(), self.y)
        with self._autocast():
            logits = self.model(self.x)
        return F.cross_entropy(logits.float(), self.y)

    def step(self):
        loss = self.forward_loss()
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()

    def prompt_step(self):
        """The prompt generator alone: x → prompter(x), backward of a fixed gradient."""
        for p in self.prompter.parameters():
            p.grad = None
        with self._autocast():
            out = self.prompter(self.x)
        out.backward(self.prompt_grad.to(out.dtype))

    def saved_mb(self) -> float:
        from ..prompters.fused import SavedTensorMeter

        params = list(self.model.parameters()) + list(self.model.buffers())
        with SavedTensorMeter(exclude=params) as meter:
            loss = self.forward_loss()
        del loss
        return meter.megabytes
