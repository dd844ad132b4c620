"""A helper for tests that train tiny models (not a test module)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Tiny models train several times faster on one thread on a shared 2-core machine
    (thread hand-offs cost more than the matmuls); restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
