"""tqdm progress bars, only where asked for."""
from __future__ import annotations


def progress_bar(iterable, enabled: bool, **kwargs):
    """``iterable`` wrapped in a tqdm bar when ``enabled``, else unchanged."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, dynamic_ncols=True, **kwargs)
