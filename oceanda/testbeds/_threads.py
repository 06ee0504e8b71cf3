"""One torch thread count for the duration of an integration (the testbeds' many small FFTs run
much faster on one thread of a busy 2-core machine than on two)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count (``None``: leave it).

    Parameters
    ----------
    n : torch threads inside the block (None: unchanged)

    Yields
    ------
    None
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
