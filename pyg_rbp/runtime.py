"""The process's run-time settings every command shares: the random seed and the CPU threads.

One place so that ``train``, the leaderboard's workers, the benchmarks and the tasks seed and
size torch the same way (a benchmark's timings are one-thread numbers; a seeded run is
reproducible across them).
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["set_seed", "set_threads"]


def set_seed(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy/random for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op torch threads (``None`` or 0: leave torch's default)."""
    if threads:
        torch.set_num_threads(int(threads))
