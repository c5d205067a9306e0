"""What a computation keeps for backward, device-independently: :class:`SavedTensorMeter` and
:func:`saved_tensor_bytes` (``torch.autograd.graph.saved_tensors_hooks``), used to compare the fused LIF gate
with the reference and by ``lorsp bench``.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


class SavedTensorMeter:
    """Sums the bytes autograd saves for backward inside ``with meter:`` (``torch.autograd.graph.
    saved_tensors_hooks``), counting each storage once. Storages of the tensors in ``exclude`` (e.g. the
    model's parameters, which exist whether or not they are saved) are counted apart as ``excluded_bytes``.
    Device-independent: the same numbers on CPU and GPU for the same dtype."""

    def __init__(self, exclude=()):
        self.bytes = 0
        self.excluded_bytes = 0
        self.count = 0
        self._seen: set = set()
        self._exclude = {self._key(t)[0] for t in exclude}
        self._hooks = None

    @staticmethod
    def _key(tensor: torch.Tensor):
        try:
            storage = tensor.untyped_storage()
            return (storage.data_ptr(), str(tensor.device)), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage
            return (id(tensor), str(tensor.device)), tensor.numel() * tensor.element_size()

    def _pack(self, tensor: torch.Tensor):
        key, size = self._key(tensor)
        if key not in self._seen:
            self._seen.add(key)
            self.count += 1
            if key in self._exclude:
                self.excluded_bytes += size
            else:
                self.bytes += size
        return tensor

    @staticmethod
    def _unpack(tensor):
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False

    @property
    def megabytes(self) -> float:
        return self.bytes / 2 ** 20


@contextmanager
def saved_tensor_bytes(exclude=()):
    """``with saved_tensor_bytes() as meter: loss = f(x)`` → ``meter.bytes`` saved for backward (see
    :class:`SavedTensorMeter`)."""
    meter = SavedTensorMeter(exclude)
    with meter:
        yield meter
