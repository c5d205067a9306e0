"""The paper's method labels (LP, ILM-VP, AutoVP, EVP, LoR-VP, VPT, LPF, LoRSP, Top-k, Dropout) and the
engine's method, head and prompter options of each: :func:`method_config`, :func:`label_of`, and which
methods cannot run where (:func:`not_applicable`)."""
from __future__ import annotations

from typing import Any

from ..lif import DEFAULT_TAU, DEFAULT_V_THRESHOLD
from ..prompters.factors import DEFAULT_GROUPS, DEFAULT_RANK

#: the paper's default LoRSP setting for downstream tasks and for OOD (Sec. IV-A3)
DOWNSTREAM_FACTORS = dict(groups=DEFAULT_GROUPS, rank=DEFAULT_RANK)
#: LoRSP's LIF defaults (Sec. IV-A3: "set to 0.0 and 4.0")
LORSP_LIF_DEFAULTS = dict(tau=DEFAULT_TAU, v_threshold=DEFAULT_V_THRESHOLD)
#: label (the paper's word) → the engine's method (prompter name) and head
METHOD_LABELS = {
    "LP": dict(method="none", head="linear"),
    "ILM-VP": dict(method="pad", head="ilm", squash="sigmoid"),
    "AutoVP": dict(method="pad", head="linear"),
    "EVP": dict(method="evp", head="linear"),
    "LoR-VP": dict(method="lorvp", head="linear"),
    "VPT": dict(method="vpt", head="linear"),
    "LPF": dict(method="lpf", head="linear"),
    "LoRSP": dict(method="lorsp", head="linear"),
    "Top-k": dict(method="topk", head="linear"),
    "Dropout": dict(method="dropout", head="linear"),
}
#: padding prompts: inner (image) size at 224 px — ILM-VP 32 (147K params), AutoVP 160 (74K params)
PAD_INNER_AT_224 = {"ILM-VP": 32, "AutoVP": 160}
#: EVP's learnable frame width at 224 px (its image shrunk to 164 px: 69,840 params); scaled with the side
EVP_PAD_AT_224 = 30
#: backbones that are vision transformers (VPT applies); the others are CNNs
TRANSFORMER_BACKBONES = ("vit_b32", "vit_b16", "swin_b", "clip_vit_b32")


def not_applicable(label: str, backbone: str) -> str | None:
    """Why ``label`` cannot run on ``backbone`` (``None`` when it can): VPT needs a transformer; a method
    whose prompter is not registered in this installation cannot run at all (said, never faked)."""
    if label == "VPT" and backbone not in TRANSFORMER_BACKBONES:
        return (f"not applicable: VPT prepends prompt tokens to a transformer's token sequence, and "
                f"{backbone} is a CNN")
    missing = unavailable(label)
    if missing:
        return missing
    return None


def unavailable(label: str) -> str | None:
    """A reason when the prompter of ``label`` is not registered (``lorsp.list_prompters()``), else None."""
    from ..prompters import list_prompters
    method = METHOD_LABELS.get(label, {}).get("method")
    if method is None or method in list_prompters() or method == "none":
        return None
    return f"not available: the prompter {method!r} is not registered in this installation"


def method_config(label: str, image_size: int = 224, factors: dict | None = None,
                  **prompter_kwargs) -> dict[str, Any]:
    """The engine's ``method``, ``head`` and prompter options for a method label of the paper.

    ``label``: ``"LP"``, ``"ILM-VP"``, ``"AutoVP"``, ``"EVP"``, ``"LoR-VP"``, ``"VPT"``, ``"LPF"``,
    ``"LoRSP"``, ``"Top-k"``, ``"Dropout"``. ``factors`` (groups, rank) applies to the factor-based
    prompters (LPF, LoRSP, Top-k, Dropout; Eqs. 4–5); padding prompts get the paper's inner size scaled to
    ``image_size`` (32 and 160 at 224 px), and EVP its frame width (30 at 224 px: 9 at 64 px).
    """
    if label not in METHOD_LABELS:
        raise KeyError(f"unknown method label {label!r}; expected one of {list(METHOD_LABELS)}")
    config = dict(METHOD_LABELS[label])
    if label in PAD_INNER_AT_224:
        config["inner_size"] = max(1, round(PAD_INNER_AT_224[label] * image_size / 224))
    if label == "EVP":  # the frame keeps EVP's proportion (30/224 of the side), as the padding prompts do
        config["pad_size"] = round(EVP_PAD_AT_224 * image_size / 224)
    if label in ("LPF", "LoRSP", "Top-k", "Dropout"):
        config.update(factors if factors is not None else DOWNSTREAM_FACTORS)
    if label == "LoRSP":  # explicit, so that a sweep's default point is the same run as everyone's default
        config.update(LORSP_LIF_DEFAULTS)
    config.update(prompter_kwargs)
    return config


def label_of(config: dict) -> str:
    """The paper's label of a run config (also works on the ``config`` of a record written by the CLI)."""
    method = config.get("method", "none")
    head = config.get("head", "linear")
    if method in ("none", None, "lp"):
        return "LP"
    if method == "pad":
        return "ILM-VP" if head == "ilm" else "AutoVP"
    if method in ("topk", "dropout"):
        ratio = config.get("keep_ratio", (config.get("prompter_kwargs") or {}).get("keep_ratio"))
        name = "Top-k" if method == "topk" else "Dropout"
        return f"{name} {round(float(ratio) * 100)}%" if ratio is not None else name
    for label, spec in METHOD_LABELS.items():
        if spec["method"] == method:
            return label
    return str(method)
