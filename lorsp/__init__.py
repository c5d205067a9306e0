"""lorsp — Low-Rank Sparse Prompting via a spiking neural network and prompt factorisation.

The library behind the reproduction book: :class:`LIF` (Eqs. 1–3), :func:`build_prompter` (LoRSP, Eqs.
4–9, its ablations and the baselines), :func:`prompt_param_count` (Eqs. 13–15), :class:`PromptedModel`
(Eqs. 10–12). Training: ``lorsp.train.train(lorsp.train.TrainConfig(...))`` or ``lorsp train``.
"""
from .lif import LIF, LIFTrace
from .prompters import (LoRSPPrompter, Prompter, PromptFactors, build_prompter, list_prompters,
                        prompt_param_count, register_prompter)
from .model import PromptedModel
from .quiet_logs import drop_no_cuda_runtime_notice

drop_no_cuda_runtime_notice()

__version__ = "0.1.0"
