"""Visual prompters by name: ``lorsp.build_prompter(name, ...)``; ``lorsp.list_prompters()`` lists them."""
from .registry import (Prompter, as_size, build_prompter, get_prompter_class, list_prompters,
                       prompt_param_count, prompt_sparsity, register_prompter)
from .factors import PromptFactors, factor_param_count
from .lowrank_sparse import (DropoutPrompter, LoRSPExplanation, LoRSPPrompter, LowRankPrompter, LPFPrompter,
                             ThresholdPrompter, TopKPrompter)
from .baselines import LoRVPPrompter, NoPrompter, PadPrompter, frame_mask
from .evp import EVPPrompter, evp_inner_size
from .vpt import VPTPrompter
