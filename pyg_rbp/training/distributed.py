"""Data-parallel training over several processes with :mod:`torch.distributed`.

Two ways in, one code path:

* ``torchrun --nproc-per-node N -m pyg_rbp.cli train ...``: torchrun sets ``RANK``,
  ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``; :func:`init_from_env` joins the group.
* ``pyg-rbp train --world-size N``: :func:`spawn` starts N processes itself (free local port,
  ``torch.multiprocessing``) and each joins the group the same way.

Backend: ``gloo`` on CPU, ``nccl`` on CUDA (each rank on ``cuda:<local rank>``). The model is
wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages gradients by
all-reduce during backward. Every rank takes its share of each round of mini-batches
(:mod:`pyg_rbp.training.loaders`). The historical state buffer of ``--loader history`` is
replicated on every rank and kept identical by an **all-gather of the updated rows**
(:func:`gather_rows`): after each round, every rank receives the (node ids, solved states) of
every other rank's batches and writes them, so all ranks start the next round from the same
buffer. (Partition ownership would move less data but makes a rank's halo reads remote; on one
machine an all-gather of the round's rows is simpler and exact.) Only rank 0 writes results.

Failure handling: collectives run with a timeout (``PYG_RBP_DIST_TIMEOUT`` seconds, default
120), so a lost peer raises instead of blocking forever; :func:`spawn` watches its processes and,
when one dies, terminates the others and raises :class:`WorkerFailed` naming the rank and its
exit code or error (torchrun's agent does the same for its workers).

Divergence is decided together: a NaN/inf on one rank (its loss, its forward solve) must not
stop that rank alone while the others wait in the next collective until the timeout.
:func:`agree_on_divergence` wraps the work a rank does between two collectives and turns the
local outcome into one decision of the group (an ``all_reduce`` of a flag, then the first
diverged rank's message broadcast): every rank raises the same
:class:`~pyg_rbp.engine.DivergenceError` in the same step, so all of them record the run as
diverged at the same epoch with the same message, and rank 0's results say so.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from pyg_rbp.engine import DivergenceError
from pyg_rbp.runtime import set_threads
from pyg_rbp.training.objective import divergence_of

TIMEOUT_ENV = "PYG_RBP_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 120.0


class WorkerFailed(RuntimeError):
    """A process of a multi-process run died or raised; the others were stopped."""


def current_group() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised torch.distributed group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class ProcessGroup:
    """The processes one training run is spread over, as :func:`~pyg_rbp.training.fit.fit` sees
    them: it wraps the model for the forward passes (:func:`wrap_ddp`: DDP averages the
    gradients), sums counts over the processes, and says which process shows progress (rank 0).
    :data:`LOCAL` is a single process; :meth:`current` the initialised torch.distributed group."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> ProcessGroup:
        rank, world = current_group()
        return cls(rank, world)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model if self.world_size == 1 else wrap_ddp(model)

    def agree_on_divergence(self) -> contextlib.AbstractContextManager[None]:
        """:func:`agree_on_divergence` across the group (a no-op alone)."""
        return agree_on_divergence() if self.world_size > 1 else contextlib.nullcontext()

    def sum(self, value: int) -> int:
        """``value`` summed over the processes (itself when alone)."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.long)
        dist.all_reduce(t)
        return int(t)


LOCAL = ProcessGroup()
"""A single process (no torch.distributed group)."""


def is_main_process() -> bool:
    """Rank 0 (or no group): the process that prints and writes results."""
    return current_group()[0] == 0


def timeout_s() -> float:
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    return float(value) if value else DEFAULT_TIMEOUT_S


def backend_for(device: str | torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(device: str | torch.device = "cpu") -> tuple[int, int, torch.device]:
    """Join the group that torchrun (or :func:`spawn`) described in the environment.

    Returns ``(rank, world_size, device)``; with ``WORLD_SIZE`` unset or 1 nothing is initialised.
    On CUDA each rank takes ``cuda:<LOCAL_RANK>``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(device)
    if world <= 1:
        return 0, 1, device
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s()))
    return rank, world, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` inside a group of several processes, else ``model``.

    Parameters are broadcast from rank 0 at wrapping, so all ranks start identical."""
    rank, world = current_group()
    if world == 1:
        return model
    param = next(model.parameters())
    ids = [param.device.index] if param.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def gather_rows(rows: Sequence[tuple[Tensor, Tensor]], world_size: int | None = None
                ) -> list[tuple[Tensor, Tensor]]:
    """All-gather ``(node ids, values)`` pairs from every rank (values of one width and dtype).

    Alone, returns ``rows``. In a group, every rank gets every rank's rows, in rank order:
    row counts are all-gathered first, then ids and values padded to the longest
    (``torch.distributed.all_gather``; the collectives are torch.distributed's).
    """
    rank, world = current_group()
    if world == 1 or (world_size is not None and world_size == 1):
        return list(rows)
    if rows:
        ids = torch.cat([r[0] for r in rows])
        values = torch.cat([r[1].detach() for r in rows])
    else:
        raise ValueError("gather_rows needs at least one (ids, values) pair on every rank")
    device = values.device if values.device.type == "cuda" else torch.device("cpu")
    ids, values = ids.to(device), values.to(device)
    count = torch.tensor([ids.numel()], dtype=torch.long, device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(int(c) for c in counts))
    pad_ids = ids.new_zeros(longest)
    pad_ids[: ids.numel()] = ids
    pad_vals = values.new_zeros((longest, *values.shape[1:]))
    pad_vals[: values.size(0)] = values
    all_ids = [torch.empty_like(pad_ids) for _ in range(world)]
    all_vals = [torch.empty_like(pad_vals) for _ in range(world)]
    dist.all_gather(all_ids, pad_ids)
    dist.all_gather(all_vals, pad_vals)
    return [(i[: int(c)], v[: int(c)]) for i, v, c in zip(all_ids, all_vals, counts)]


@contextlib.contextmanager
def agree_on_divergence() -> Iterator[None]:
    """Make every rank of the group take the same divergence decision for the wrapped work.

    Wrap what a rank computes on its own between two collectives (a batch's forward and loss
    check, before the backward whose gradient all-reduce every rank joins). A divergence raised
    inside (:func:`~pyg_rbp.training.objective.divergence_of`: a
    :class:`~pyg_rbp.engine.DivergenceError` or the engine's non-finite ``h0``) is held; then
    one ``all_reduce(MIN)`` of ``rank if diverged else world_size`` tells every rank whether any
    rank diverged and which came first, and that rank's message is broadcast
    (``broadcast_object_list``). If any did, every rank raises the same
    ``DivergenceError("rank r of N: <message>")`` here. Any other error propagates unchanged (the
    process dies and :func:`spawn` / torchrun stop the others). Alone (no group) the wrapped work
    runs as is: its own error propagates, nothing is communicated.
    """
    rank, world = current_group()
    if world == 1:
        yield
        return
    local: DivergenceError | None = None
    try:
        yield
    except (DivergenceError, ValueError) as err:
        local = divergence_of(err)
        if local is None:
            raise
    device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
              else torch.device("cpu"))
    flag = torch.tensor([rank if local is not None else world], dtype=torch.long, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    first = int(flag)
    if first == world:
        return
    box = [str(local) if rank == first else None]
    dist.broadcast_object_list(box, src=first)
    raise DivergenceError(f"rank {first} of {world}: {box[0]}") from local


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``torch.distributed.broadcast_object_list``); the value
    itself outside a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, fn: Callable[..., Any], world_size: int, port: int, device: str,
            threads: int | None, args: tuple) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    set_threads(threads)
    init_from_env(device)
    try:
        fn(*args)
    finally:
        shutdown()


def spawn(fn: Callable[..., Any], world_size: int, args: tuple = (), device: str = "cpu",
          threads: int | None = 1) -> None:
    """Run ``fn(*args)`` in ``world_size`` fresh processes forming one torch.distributed group.

    ``fn`` must be importable (a module-level function). Each process uses ``threads`` torch
    threads. Raises :class:`WorkerFailed` as soon as one process dies or raises; the others are
    terminated then (never a hang).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    port = free_port()
    try:
        mp.spawn(_worker, args=(fn, world_size, port, device, threads, args), nprocs=world_size,
                 join=True, start_method="spawn")
    except mp.ProcessExitedException as err:
        raise WorkerFailed(
            f"rank {err.error_index} of {world_size} died (exit code {err.exit_code}); the other "
            "processes were stopped") from None
    except mp.ProcessRaisedException as err:
        raise WorkerFailed(f"rank {err.error_index} of {world_size} raised:\n{err}") from None


def train_and_save(cfg: Any, loaded: Any, data: Any, seed: int, out_path: str, device: str = "cpu",
                   dtype: torch.dtype | None = None, accumulate: int = 1) -> None:
    """Train ``cfg`` with mini-batches on ``data`` and (rank 0) save ``{"state", "result"}``.

    The model is built after seeding with ``seed``, in ``dtype`` when given, so one process and
    a group of processes start from the same weights. A module-level function, so that
    :func:`spawn` can start it; used by the multi-process tests and the throughput benchmark.
    """
    # imported here: node -> fit -> distributed (this module) would be a cycle at the top
    from pyg_rbp.runtime import set_seed
    from pyg_rbp.training.models import build_node_model
    from pyg_rbp.training.node import train_node_batched

    set_seed(seed)
    model = build_node_model(cfg, data.x.size(1), loaded.num_classes)
    if dtype is not None:
        model = model.to(dtype)
    result = train_node_batched(cfg, loaded, data, seed, device=device, progress=False,
                                accumulate=accumulate, model=model)
    if is_main_process():
        torch.save({"state": model.state_dict(), "result": result}, out_path)
