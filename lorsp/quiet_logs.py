"""Keep one machine-specific torch log line out of the book's cell outputs.

On a machine that sets ``CUDA_HOME`` but has no GPU (our CI), the first import of torch's compiler — which any
import of ``torchvision`` brings in, through ``torchvision.ops`` — logs "No CUDA runtime is found, using
CUDA_HOME=…" from ``torch.utils.cpp_extension``. In a notebook that line lands in the output of whichever cell
first imports torchvision, where a reader expects the chapter's results. It says nothing about the run (lorsp
never builds a CUDA extension), so this filter drops that one message and leaves every other log record of that
logger as it was.
"""
from __future__ import annotations

import logging

__all__ = ["drop_no_cuda_runtime_notice"]

_LOGGER = "torch.utils.cpp_extension"
_MESSAGE = "No CUDA runtime is found"


class _NoCudaRuntimeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_MESSAGE)


def drop_no_cuda_runtime_notice() -> None:
    """Attach the filter to ``torch.utils.cpp_extension``'s logger (once; calling again adds nothing)."""
    logger = logging.getLogger(_LOGGER)
    if not any(isinstance(existing, _NoCudaRuntimeNotice) for existing in logger.filters):
        logger.addFilter(_NoCudaRuntimeNotice())
