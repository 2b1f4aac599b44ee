"""Floating-point environment for CPU runs: flushing subnormal numbers to zero.

Gradients through a strongly contracting map shrink geometrically: a Hopfield memory at its
small initial weights multiplies a back-propagated vector by about 1e-2 per step, so after 20
to 50 steps (BPTT, TBPTT, a long Neumann series) the entries fall below the smallest normal
float32 (about 1.2e-38). x86 CPUs process such subnormal numbers through a slow microcode path:
a matrix product on them runs 5-10x slower, for contributions far below working precision.
CUDA handles them at full speed. :func:`flush_denormals` turns on flush-to-zero for a block of
code; the Hopfield benchmark trains under it so that every gradient mode is timed on the
arithmetic that matters. (The Neumann solver also stops on its own once its terms underflow:
see :func:`pyg_rbp.engine.adjoint.neumann_solve`.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["flush_denormals"]


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[bool]:
    """Flush subnormal floats to zero on the CPU inside the block; yields whether it is on.

    Uses :func:`torch.set_flush_denormal`, which sets the flag of the calling thread only
    (the thread that runs the forward and, on the CPU, the backward); with more than one intra-op
    thread, the other workers keep the default. Run with ``torch.set_num_threads(1)`` for the
    full effect. PyTorch has no getter for the flag, so on exit it is switched back off (its
    default). ``enabled=False`` makes the block a no-op; on a CPU without the SSE3 flags the
    block runs unchanged and yields ``False``.
    """
    if not enabled:
        yield False
        return
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        if supported:
            torch.set_flush_denormal(False)
