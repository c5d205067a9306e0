"""A frozen backbone with a visual prompt and an output head (Eqs. 10–12).

``PromptedModel(backbone, prompter, head="linear", num_classes=K)``:

    x̃ = prompter(x)                    the prompt, in [0, 1] pixel space (Eq. 10)
    z = f(normalise(x̃))                the frozen backbone with its own mean/std (Eq. 11)
    ŷ = head(z)                         linear probe on pooled features (Eq. 12), or a mapping of the
                                        source logits ("fullymap", "flm", "ilm")

Book chapters: "Backbones", "Downstream tasks".
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["PromptedModel", "LabelMappingHead", "compute_label_mapping", "label_frequency_matrix", "HEADS",
           "freeze"]

HEADS = ("linear", "fullymap", "flm", "ilm")


def freeze(module: nn.Module) -> nn.Module:
    """No parameter of ``module`` requires grad and it stays in eval mode (batch-norm statistics fixed)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


def label_frequency_matrix(source_logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[num_classes, num_source]``: how often images of each target class land on each source class."""
    predictions = source_logits.argmax(1)
    matrix = torch.zeros(num_classes, source_logits.shape[1], dtype=torch.long)
    matrix.index_put_((labels.long().cpu(), predictions.cpu()), torch.ones_like(predictions.cpu()), accumulate=True)
    return matrix


def compute_label_mapping(frequency: torch.Tensor) -> torch.Tensor:
    """Greedy one-to-one label mapping (ILM-VP): repeatedly take the largest entry of the frequency matrix
    ``[num_target, num_source]``, map that target class to that source class, and remove its row and column.

    Returns ``[num_target]`` source indices. Ties go to the lowest (target, source) index.
    """
    frequency = torch.as_tensor(frequency, dtype=torch.float64).clone()
    num_target, num_source = frequency.shape
    if num_target > num_source:
        raise ValueError(f"a one-to-one label mapping needs at least as many source classes ({num_source}) "
                         f"as target classes ({num_target})")
    mapping = torch.full((num_target,), -1, dtype=torch.long)
    for _ in range(num_target):
        flat = int(frequency.argmax())
        target, source = divmod(flat, num_source)
        mapping[target] = source
        frequency[target, :] = -float("inf")
        frequency[:, source] = -float("inf")
    return mapping


class LabelMappingHead(nn.Module):
    """Frozen source logits re-indexed by a one-to-one label mapping (FLM: computed once; ILM: every epoch)."""

    def __init__(self, num_source: int, num_classes: int, iterative: bool):
        super().__init__()
        if num_classes > num_source:
            raise ValueError(f"label mapping needs num_classes ({num_classes}) <= source classes ({num_source})")
        self.iterative = iterative
        self.register_buffer("mapping", torch.arange(num_classes))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, source_logits: torch.Tensor) -> torch.Tensor:
        return source_logits[:, self.mapping]


class PromptedModel(nn.Module):
    """Frozen timm ``backbone`` + trainable ``prompter`` + trainable ``head``.

    Args:
        backbone: any timm model; it is frozen here (no parameter requires grad, always in eval mode).
        prompter: a :class:`lorsp.prompters.Prompter` or ``None`` (linear probing).
        head: ``"linear"`` (linear probe on pooled features), ``"fullymap"`` (a linear layer on the frozen
            source logits), ``"flm"`` / ``"ilm"`` (source logits re-indexed by a label mapping computed once /
            every epoch, see :meth:`update_label_mapping`).
        num_classes: target classes.
        mean, std: normalisation; default: the backbone's timm pretrained configuration.
    """

    def __init__(self, backbone: nn.Module, prompter: nn.Module | None = None, head: str = "linear",
                 num_classes: int = 10, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 label_mapping_interval: int | None = None):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.backbone = freeze(backbone)
        self.prompter = prompter
        self.head_type = head
        self.num_classes = num_classes
        if mean is None or std is None:
            import timm.data
            config = timm.data.resolve_data_config({}, model=backbone)
            mean = config["mean"] if mean is None else mean
            std = config["std"] if std is None else std
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean/std must have the same length and std > 0, got mean={mean}, std={std}")
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        if prompter is not None and hasattr(prompter, "attach"):
            prompter.attach(self.backbone)  # e.g. VPT's prompt tokens go inside the backbone
        if head == "linear":
            self.head = nn.Linear(backbone.num_features, num_classes)
        else:
            num_source = getattr(backbone, "num_classes", 0)
            if not num_source:
                raise ValueError(f"head {head!r} maps the backbone's source logits, but "
                                 f"{type(backbone).__name__} has no classifier (num_classes=0)")
            if head == "fullymap":
                self.head = nn.Linear(num_source, num_classes)
            else:
                self.head = LabelMappingHead(num_source, num_classes, iterative=(head == "ilm"))

    # -- modes -----------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # batch-norm statistics of the frozen backbone never change
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly what trains: the prompter's and the head's parameters (VPT's tokens included)."""
        params = [] if self.prompter is None else [p for p in self.prompter.parameters() if p.requires_grad]
        params += [p for p in self.head.parameters() if p.requires_grad]
        return params

    # -- forward ---------------------------------------------------------------------------------
    def prompted(self, x: torch.Tensor) -> torch.Tensor:
        """x̃ in [0, 1] pixel space (Eq. 10); x itself for linear probing."""
        return x if self.prompter is None else self.prompter(x)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features of the prompted, normalised image (Eq. 11)."""
        tokens = self.backbone.forward_features(self.normalise(self.prompted(x)))
        return self.backbone.forward_head(tokens, pre_logits=True)

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's own classifier logits on the prompted image."""
        return self.backbone(self.normalise(self.prompted(x)))

    def head_forward(self, features: torch.Tensor) -> torch.Tensor:
        """Linear head on (possibly cached) features."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_type == "linear":
            return self.head(self.features(x))
        return self.head(self.source_logits(x))

    # -- label mapping ---------------------------------------------------------------------------
    @torch.no_grad()
    def update_label_mapping(self, source_logits: torch.Tensor, labels: torch.Tensor, epoch: int | None = None):
        """Recompute the FLM/ILM mapping from source logits and labels of the training set.

        FLM computes it once (later calls do nothing); ILM every call (the trainer calls it each epoch).
        Returns the mapping, or ``None`` for other heads.
        """
        if not isinstance(self.head, LabelMappingHead):
            return None
        if not self.head.iterative and int(self.head.updates) > 0:
            return self.head.mapping
        frequency = label_frequency_matrix(source_logits, labels, self.num_classes)
        self.head.mapping.copy_(compute_label_mapping(frequency).to(self.head.mapping.device))
        self.head.updates += 1
        return self.head.mapping
