r"""Associative memory with a continuous Hopfield network solved as a graph fixed point.

The paper's Hopfield experiment (Liao et al., 2018, section 4.1) in graph form: the neurons of
:class:`HopfieldMemory` are ``D`` input, ``H`` hidden and ``D`` output nodes, the synapses an
undirected graph with one symmetric weight each, and recall is the fixed point of
:class:`pyg_rbp.nn.HopfieldCell` inside :class:`pyg_rbp.nn.FixedPointConv` with the input
neurons clamped to the (corrupted) image. Training back-propagates an L1 loss between the output
neurons and the clean image through that fixed point with any of the five gradient modes.

Several images are recalled in one solve as the channels of the node state (``[N, P]``): the
channels never mix, so every image follows exactly its own dynamics, and the per-image-summed
loss has exactly the sum of the per-image gradients.

This module holds the model, the training loop, the retrieval metrics and the diagnostics that
explain a failure (forward residual, spectral radius of the step's Jacobian, gradient agreement
with the exact implicit gradient); :mod:`pyg_rbp.tasks.hopfield.experiment` runs the benchmark.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pyg_rbp.engine import DivergenceError, spectral_radius
from pyg_rbp.nn.fixed_point_conv import FixedPointConv
from pyg_rbp.nn.hopfield import HopfieldCell
from pyg_rbp.tasks.hopfield.data import pixel_errors, switch_off

TRAIN_INPUTS = ("clean", "corrupted")
LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "sgd")


class HopfieldMemory(torch.nn.Module):
    r"""A Hopfield associative memory: ``D`` clamped input, ``H`` hidden, ``D`` output neurons.

    Node order is ``[inputs, hidden, outputs]``. For images ``X`` (``[P, D]``) the node input is
    the image padded with zeros, :math:`x = [X^\top; 0; 0]` (``[N, P]``), which is also the
    initial state; the input neurons are clamped to it, every other neuron follows
    :math:`h \leftarrow (1-a) h + W \sigma(b h)`. The recalled images are the output neurons'
    states after ``max_iter`` steps (threshold them at 0.5 for a binary image).

    Args:
        num_pixels: ``D``.
        num_hidden: ``H``.
        edge_index: the synapses over the ``N = 2 D + H`` neurons (undirected, see
            :mod:`pyg_rbp.tasks.hopfield.graphs`), or an existing :class:`HopfieldCell` to share.
        grad: gradient mode of the fixed point.
        max_iter: forward updates ``T`` (the paper: 50).
        backward_iter: ``K``, TBPTT steps / adjoint iterations (the paper: 20).
        a, b, init_std: passed to :class:`HopfieldCell`.
        dense: force (``True``/``False``) or auto-select (``None``) the dense path.
    """

    def __init__(self, num_pixels: int, num_hidden: int, edge_index: Tensor | HopfieldCell,
                 grad: str = "neumann", max_iter: int = 50, backward_iter: int = 20,
                 a: float = 1.0, b: float = 0.5, init_std: float = 1e-3,
                 dense: bool | None = None) -> None:
        super().__init__()
        if num_pixels < 1 or num_hidden < 0:
            raise ValueError(f"need num_pixels >= 1 and num_hidden >= 0, got {num_pixels}, {num_hidden}")
        self.num_pixels = num_pixels
        self.num_hidden = num_hidden
        n = 2 * num_pixels + num_hidden
        if isinstance(edge_index, HopfieldCell):
            cell = edge_index
            if cell.num_nodes != n or cell.num_clamped != num_pixels:
                raise ValueError(f"the given cell has {cell.num_nodes} neurons ({cell.num_clamped} "
                                 f"clamped); this memory needs {n} ({num_pixels} clamped)")
        else:
            cell = HopfieldCell(n, edge_index, clamp=torch.arange(num_pixels), a=a, b=b,
                                init_std=init_std, dense=dense)
        self.cell = cell
        self.conv = FixedPointConv(cell, grad=grad, max_iter=max_iter, backward_iter=backward_iter)

    @property
    def num_nodes(self) -> int:
        return self.cell.num_nodes

    def node_input(self, images: Tensor) -> Tensor:
        """``[P, D]`` images -> ``[N, P]`` node input (the images padded with zeros)."""
        if images.dim() != 2 or images.size(1) != self.num_pixels:
            raise ValueError(f"images must have shape [P, {self.num_pixels}], got {list(images.shape)}")
        w = self.cell.weight
        x = images.to(dtype=w.dtype, device=w.device).transpose(0, 1)
        pad = x.new_zeros(self.num_nodes - self.num_pixels, x.size(1))
        return torch.cat([x, pad], dim=0)

    def solve(self, images: Tensor) -> Tensor:
        """The state of every neuron after the updates, ``[N, P]``."""
        x = self.node_input(images)
        return self.conv(x, self.cell.edge_index, h0=x)

    def forward(self, images: Tensor) -> Tensor:
        """Recalled images: the output neurons' states, ``[P, D]``."""
        return self.solve(images)[-self.num_pixels:].transpose(0, 1)

    @torch.no_grad()
    def energy_trajectory(self, images: Tensor) -> Tensor:
        """Energy (:meth:`HopfieldCell.energy`) of each image at steps ``0..T``: ``[T + 1, P]``."""
        x = self.node_input(images)
        inputs = self.cell.prepare(x, self.cell.edge_index)
        at = self.cell.energy_inputs(inputs)  # the full weight matrix, built once
        h = x
        energies = [self.cell._energy(h, at)]
        for _ in range(self.conv.max_iter):
            h = self.cell.step(h, inputs)
            energies.append(self.cell._energy(h, at))
        return torch.stack(energies)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(inputs={self.num_pixels}, hidden={self.num_hidden}, "
                f"outputs={self.num_pixels}, {self.conv})")


def recall_loss(output: Tensor, target: Tensor) -> Tensor:
    """Per-image mean L1 between recalled and clean images, summed over images (the paper's
    ``L1Loss`` per image; summing keeps every image's gradient as in batch-1 training)."""
    return (output - target.to(output.dtype)).abs().mean(dim=1).sum()


@dataclass
class TrainResult:
    """What :func:`train_memory` reports.

    Attributes:
        loss: mean per-image L1 of every epoch.
        residual: forward relative residual of the last solve of every epoch.
        epoch_time_s: wall time of every epoch.
        evals: ``(epoch, success_rate, pixel_error)`` on the evaluation set when requested.
        diverged: the error message when the solve or its backward became NaN/inf.
        epochs_done: epochs completed.
    """

    loss: list[float] = field(default_factory=list)
    residual: list[float | None] = field(default_factory=list)
    epoch_time_s: list[float] = field(default_factory=list)
    evals: list[tuple[int, float, float]] = field(default_factory=list)
    diverged: str | None = None
    epochs_done: int = 0


def train_memory(model: HopfieldMemory, clean: Tensor, epochs: int, *, lr: float = 1e-3,
                 batch_size: int = 0, train_input: str = "clean", corrupt: float = 0.5,
                 seed: int = 0, lr_schedule: str = "constant", optimizer: str = "adam",
                 eval_images: Tensor | None = None, eval_every: int = 0,
                 bound: float = 0.01, copies: int = 1,
                 progress: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    r"""Train the memory to recall ``clean`` (``[P, D]`` binary images).

    Args:
        epochs: passes over the patterns.
        lr: Adam learning rate (the paper: 1e-3).
        optimizer: ``"adam"`` (the paper) or ``"sgd"`` (momentum 0.9). Adam scales every
            synapse's step to about ``lr``; an output neuron has ~``N`` nearly constant inputs
            (idle hidden neurons sit at :math:`\sigma(0) = 1/2`), so its state moves by about
            ``lr * N / 2`` per step whatever the gradient says. SGD steps in proportion to
            the gradient instead.
        lr_schedule: ``"constant"`` (the paper) or ``"cosine"`` (annealed to zero over the
            epochs: with an L1 loss Adam's steps do not shrink near the optimum, so the
            outputs keep jittering by about ``lr`` times the fan-in unless the rate decays).
        batch_size: patterns per Adam step; ``0`` means all of them (one step per epoch).
            The paper used 1.
        train_input: what the input neurons are clamped to in training: ``"clean"`` images
            (the reference implementation) or ``"corrupted"`` ones, a fresh random switch-off
            of ``corrupt`` of the "on" pixels each time (a denoising objective).
        seed: seeds batch order and training corruptions (independent of any test seed).
        copies: with ``train_input="corrupted"``, each pattern of a batch appears this many times,
            each copy with its own random corruption (more corruptions seen per Adam step; the
            copies are extra channels of the same solve).
        eval_images: corrupted inputs whose recall of ``clean`` is evaluated every
            ``eval_every`` epochs (and after the last).
        progress: called as ``progress(epoch, info)`` after every epoch.

    A :class:`~pyg_rbp.DivergenceError` or a non-finite loss stops training and is recorded
    in :attr:`TrainResult.diverged`; the model keeps its last finite weights.
    """
    if train_input not in TRAIN_INPUTS:
        raise ValueError(f"train_input must be one of {TRAIN_INPUTS}, got {train_input!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be an integer >= 1, got {copies!r}")
    p = clean.size(0)
    bs = p if batch_size in (0, None) or batch_size >= p else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 0, got {batch_size!r}")
    device = model.cell.weight.device
    clean = clean.to(device)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = None
    if lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    gen = torch.Generator().manual_seed(seed)
    result = TrainResult()
    model.train()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(p, generator=gen) if bs < p else torch.arange(p)
        total = 0.0
        try:
            for start in range(0, p, bs):
                idx = order[start:start + bs].to(device)
                target = clean[idx]
                if train_input == "corrupted" and copies > 1:
                    target = target.repeat(copies, 1)
                inp = target if train_input == "clean" else switch_off(target, corrupt, gen)
                out = model(inp)
                loss = recall_loss(out, target)
                if not math.isfinite(float(loss.detach())):
                    raise DivergenceError(f"non-finite training loss {float(loss)}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * idx.numel() / target.size(0)
        except DivergenceError as err:
            result.diverged = f"epoch {epoch}: {err}"
            break
        if sched is not None:
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result.epoch_time_s.append(time.perf_counter() - t0)
        result.loss.append(total / p)
        stats = model.conv.stats
        result.residual.append(None if stats is None else stats.residual)
        result.epochs_done = epoch
        info: dict[str, Any] = {"loss": result.loss[-1], "residual": result.residual[-1]}
        if eval_images is not None and (epoch == epochs or (eval_every and epoch % eval_every == 0)):
            ev = evaluate_retrieval(model, clean, eval_images, bound)
            result.evals.append((epoch, ev["success_rate"], ev["pixel_error"]))
            model.train()
            info["success"] = ev["success_rate"]
        if progress is not None:
            progress(epoch, info)
    return result


def allowed_wrong_pixels(num_pixels: int, bound: float = 0.01) -> int:
    """Wrong pixels a recall may have and still count as a success: ``bound`` of the image,
    rounded down, but at least one (1% of 784 MNIST pixels: 7; of 64 digits pixels: 1)."""
    if not 0 <= bound < 1:
        raise ValueError(f"bound must be a fraction in [0, 1), got {bound!r}")
    return max(1, int(bound * num_pixels + 1e-9))


@torch.no_grad()
def evaluate_retrieval(model: HopfieldMemory, clean: Tensor, inputs: Tensor,
                       bound: float = 0.01) -> dict[str, Any]:
    """Recall ``clean`` from ``inputs`` (``[P, D]``).

    Returns ``success_rate`` (fraction of images recalled with at most
    :func:`allowed_wrong_pixels` wrong pixels), ``pixel_error`` (mean over images of the
    fraction of wrong pixels after thresholding at 0.5), the per-image errors, the binary
    recalled images and the forward residual.
    """
    allowed = allowed_wrong_pixels(clean.size(1), bound)
    model.eval()
    out = model(inputs).float().cpu()
    clean = clean.float().cpu()
    errors = pixel_errors(out, clean)
    wrong = torch.round(errors * clean.size(1))
    stats = model.conv.stats
    return {
        "success_rate": float((wrong <= allowed).float().mean()),
        "allowed_wrong_pixels": allowed,
        "pixel_error": float(errors.mean()),
        "per_image_error": errors.tolist(),
        "retrieved": (out >= 0.5).to(torch.uint8),
        "forward_residual": None if stats is None else stats.residual,
        "finite": bool(torch.isfinite(out).all()),
    }


def fixed_point_diagnostics(model: HopfieldMemory, images: Tensor, iters: int = 50,
                            seed: int = 0) -> dict[str, float | None]:
    """Forward residual and spectral radius of :math:`J = \\partial F/\\partial h` at the state
    the memory reaches from ``images``: below one, RBP and Neumann-RBP converge."""
    with torch.no_grad():
        h = model.solve(images)
    residual = model.conv.stats.residual
    x = model.node_input(images)
    inputs = model.cell.prepare(x, model.cell.edge_index)
    if not bool(torch.isfinite(h).all()):
        return {"forward_residual": residual, "spectral_radius": None}
    gen = torch.Generator(device=h.device).manual_seed(seed)
    rho = spectral_radius(lambda s: model.cell.step(s, inputs), h.detach(), iters=iters, generator=gen)
    return {"forward_residual": residual, "spectral_radius": rho}


def gradient_agreement(model: HopfieldMemory, inputs: Tensor, clean: Tensor,
                       max_images: int | None = None) -> dict[str, float | None]:
    r"""Cosine and relative error of the model's gradient against the exact implicit gradient.

    The exact gradient solves :math:`(I - J^\top) z = g` densely per image in float64 at the
    state the forward pass reached (each image's Jacobian is its own ``N x N`` block), then
    :math:`\nabla_w = (\partial F / \partial w)^\top z`. It is the true gradient only where the
    forward has converged; the forward residual says how far it is.
    """
    if max_images is not None:
        inputs, clean = inputs[:max_images], clean[:max_images]
    cell = model.cell
    model.zero_grad(set_to_none=True)
    out = model(inputs)
    recall_loss(out, clean).backward()
    if cell.weight.grad is None or not bool(torch.isfinite(cell.weight.grad).all()):
        return {"cosine": None, "relative_error": None}
    g_model = cell.weight.grad.detach().double()
    model.zero_grad(set_to_none=True)

    with torch.no_grad():
        h = model.solve(inputs).detach()
    x = model.node_input(inputs)
    inputs_p = cell.prepare(x, cell.edge_index)
    d = model.num_pixels
    hs = h.clone().requires_grad_(True)
    loss = recall_loss(hs[-d:].transpose(0, 1), clean.to(hs))
    g = torch.autograd.grad(loss, hs)[0].double()
    with torch.no_grad():
        W = cell.weight_matrix().double()
        free = (~cell.clamp_mask).double() if cell.clamp_mask is not None else torch.ones(
            cell.num_nodes, dtype=torch.float64, device=h.device)
        sig = torch.sigmoid(cell.b * h.double())
        slope = cell.b * sig * (1 - sig)
        z = torch.empty_like(g)
        eye = torch.eye(cell.num_nodes, dtype=torch.float64, device=h.device)
        for p in range(h.size(1)):
            # J = diag(free) [(1 - a) I + W diag(slope_p)] diag(free): clamped neurons are
            # held at x, so they neither change nor pass on a change of their state.
            J = free.unsqueeze(1) * (W * slope[:, p].unsqueeze(0) + (1 - cell.a) * eye) * free.unsqueeze(0)
            z[:, p] = torch.linalg.solve(eye - J.T, g[:, p])
    hs2 = h.clone().requires_grad_(False)
    with torch.enable_grad():
        step = cell.step(hs2, inputs_p)
        g_exact = torch.autograd.grad(step, cell.weight, z.to(step.dtype))[0].double()
    cos = float(torch.nn.functional.cosine_similarity(g_model, g_exact, dim=0))
    rel = float((g_model - g_exact).norm() / g_exact.norm().clamp_min(1e-300))
    return {"cosine": cos, "relative_error": rel}
