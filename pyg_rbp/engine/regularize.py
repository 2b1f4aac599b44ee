r"""Keeping a fixed-point map contractive: :func:`jacobian_penalty`.

The implicit gradient modes are exact, and Neumann/RBP converge, only where the step's Jacobian
:math:`J = \partial f / \partial h` has spectral radius below one. Penalising
:math:`\|J\|_F^2` in the loss (Bai et al., "Stabilizing Equilibrium Models by Jacobian
Regularization", 2021) keeps it there during training. The Frobenius norm bounds the spectral
radius (:math:`\rho(J) \le \|J\|_2 \le \|J\|_F`) and has an unbiased one-VJP estimate
(Hutchinson): :math:`\mathbb{E}_\epsilon \|J^\top \epsilon\|^2 = \|J\|_F^2` for
:math:`\epsilon \sim \mathcal{N}(0, I)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def jacobian_penalty(f: Callable[[Any], Any], h: Tensor | tuple[Tensor, ...], *,
                     num_samples: int = 1, normalize: bool = True,
                     generator: torch.Generator | None = None) -> Tensor:
    r"""Hutchinson estimate of :math:`\|\partial f / \partial h\|_F^2` at ``h``, differentiable.

    Evaluates ``f`` once at ``h.detach()`` and takes ``num_samples`` VJPs with Gaussian probes,
    with ``create_graph=True`` so that the estimate back-propagates to the parameters of ``f``:
    add ``weight * jacobian_penalty(...)`` to the loss. With ``normalize`` (the default, as
    torchdeq's ``jac_reg``) the estimate is divided by the state's size, i.e. it estimates the
    mean squared Jacobian entry per row, comparable across graph sizes.

    Args:
        f: one step of the dynamics (a tensor, or a tuple of tensors, to the same).
        h: the state, usually the solution (it is detached: only ``f``'s parameters and the
            tensors it captures get gradients).
        num_samples: probes averaged.
        normalize: divide by the number of state entries.
        generator: for reproducible probes.

    Returns:
        A 0-d tensor.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    is_tuple = isinstance(h, (tuple, list))
    state = tuple(h) if is_tuple else (h,)
    h_in = tuple(t.detach().requires_grad_(True) for t in state)
    with torch.enable_grad():
        out = f(h_in if is_tuple else h_in[0])
        out = tuple(out) if is_tuple else (out,)
        total = h_in[0].new_zeros(())
        for _ in range(num_samples):
            probes = [torch.randn(o.shape, dtype=o.dtype, device=o.device, generator=generator)
                      for o in out]
            grads = torch.autograd.grad(out, h_in, probes, create_graph=True, retain_graph=True,
                                        allow_unused=True)
            total = total + sum(g.pow(2).sum() for g in grads if g is not None)
    size = sum(t.numel() for t in h_in) if normalize else 1
    return total / (num_samples * size)
