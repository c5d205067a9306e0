"""What a run record says of its model (weights source, parameter counts) and of its data (the exact images)."""
from __future__ import annotations

from torch import nn

from ..results import to_jsonable
from .config import TrainConfig


def splits_provenance(train_set, test_set, config: TrainConfig, val_set=None) -> dict:
    """The exact images of the splits, named so that anyone can check them (:mod:`lorsp.data.provenance`)."""
    from ..data import data_root
    from ..data.provenance import data_provenance

    root = data_root(config.data_root)
    out = {"train": data_provenance(train_set, root), "test": data_provenance(test_set, root)}
    if val_set is not None:
        out["val"] = data_provenance(val_set, root)
    return out


def describe_model(record: dict, model: nn.Module, info, config: TrainConfig) -> None:
    """Weights source (by package, timm tag or file name, and sha256), backbone, prompt and head sizes of a built
    model, into the run record."""
    source = str(getattr(info, "weights_source", "unknown"))
    record.update({
        "weights_source": source, "weights_sha256": getattr(info, "weights_sha256", None),
        "random_weights": source == "random",
        "backbone_info": {k: to_jsonable(getattr(info, k, None)) for k in
                          ("name", "timm_name", "num_features", "num_classes", "mean", "std", "input_size")},
    })
    prompter = getattr(model, "prompter", None)
    record["prompt_params"] = int(prompter.num_prompt_params()) if isinstance(prompter, nn.Module) else 0
    record["prompter_class"] = type(prompter).__name__ if prompter is not None else None
    if prompter is not None:
        try:  # the closed form (Eqs. 13–15 for LoRSP) beside the count on the module
            from ..prompters import prompt_param_count
            record["prompt_params_closed_form"] = int(prompt_param_count(
                config.method, image_size=config.image_size, **config.prompter_kwargs))
        except (TypeError, ValueError, NotImplementedError):
            record["prompt_params_closed_form"] = None
    head = getattr(model, "head", None)
    record["head_params"] = (sum(p.numel() for p in head.parameters() if p.requires_grad)
                             if isinstance(head, nn.Module) else 0)
