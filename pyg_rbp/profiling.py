"""Measuring rules shared by every benchmark, task and test: memory and time.

Activation memory is counted deterministically on any device as the bytes of the distinct
tensors autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``); on CUDA the
peak allocated memory is reported beside it. Times are medians over repeats after warm-up, with
the device synchronised before every clock read. One definition here keeps every number in the
project comparable.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


def _tensor_key_and_bytes(t: Tensor) -> tuple[tuple, int]:
    if t.layout == torch.strided:
        storage = t.untyped_storage()
        return ("dense", storage.data_ptr(), t.device), storage.nbytes()
    # Sparse layouts have no single storage: count their component tensors.
    if t.layout == torch.sparse_coo:
        parts = [t._indices(), t._values()]
    elif t.layout in (torch.sparse_csr, torch.sparse_bsr):
        parts = [t.crow_indices(), t.col_indices(), t.values()]
    elif t.layout in (torch.sparse_csc, torch.sparse_bsc):
        parts = [t.ccol_indices(), t.row_indices(), t.values()]
    else:  # pragma: no cover - exotic layouts
        return ("other", id(t)), t.numel() * t.element_size()
    keys = tuple(p.untyped_storage().data_ptr() for p in parts)
    return ("sparse", keys, t.device), sum(p.untyped_storage().nbytes() for p in parts)


class SavedTensorBytes:
    """Context manager counting the bytes autograd saves for backward inside it.

    Each distinct storage is counted once (a parameter saved by 100 steps is one tensor in
    memory), and a tensor stops counting when autograd frees it: ``bytes`` is the peak, over the
    block, of the saved tensors alive at once. That is the activation memory the backward pass
    keeps alive, and it does not depend on how the allocator reuses the addresses of temporary
    graphs built and freed inside the block (an inner gradient inside a training step, say).

    Example::

        with SavedTensorBytes() as mem:
            loss = model(data).sum()
        print(mem.bytes)
    """

    def __init__(self) -> None:
        self.bytes = 0  # peak of `current`
        self.current = 0
        self.count = 0
        self._live: dict[tuple, list[int]] = {}  # storage key -> [nbytes, tensors alive]
        self._ctx: Any = None

    def _release(self, key: tuple) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self._live[key]
            self.current -= entry[0]

    def _pack(self, t: Tensor) -> Tensor:
        key, nbytes = _tensor_key_and_bytes(t)
        entry = self._live.get(key)
        if entry is None:
            self._live[key] = [nbytes, 1]
            self.current += nbytes
            self.count += 1
            self.bytes = max(self.bytes, self.current)
        else:
            entry[1] += 1
        weakref.finalize(t, self._release, key)
        return t

    @staticmethod
    def _unpack(t: Tensor) -> Tensor:
        return t

    def __enter__(self) -> SavedTensorBytes:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


class WeightTensors:
    """Which saved tensors are weights (built from a module's parameters), not activations.

    A layer that builds weight tensors from its parameters once per solve (a dense matrix from
    a list of synapses, a sparse layout) keeps them alive beside its activations; counting them
    as activations would charge every gradient mode for its weights. Inside the block each
    builder ``(obj, name)`` (a method of ``obj`` that builds weights) is wrapped on its object:
    the tensors it returns count as weights while they are alive (a freed tensor's storage
    address may be reused by an activation, which then counts as one), and anything autograd
    saves while a builder runs counts as a weight too (e.g. the permutation a sparse layout is
    built with). The module's parameters and buffers are weights throughout.

    Example::

        builders = [(model.cell, "weight_matrix")]
        with WeightTensors(model, builders) as weights, WeightAwareSavedBytes(weights) as mem:
            loss = model(data).sum()
        activations = mem.bytes - mem.weight_bytes
    """

    def __init__(self, module: torch.nn.Module, builders: Iterable[tuple[Any, str]] = ()) -> None:
        self._owned = {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
        self._builders = list(builders)
        self._built: dict[int, weakref.ref[Tensor]] = {}
        self._building = 0
        self._shadowed: list[tuple[Any, str, Any]] = []

    def is_weight_storage(self, ptr: int) -> bool:
        """Whether a tensor saved now at storage address ``ptr`` is a weight."""
        if self._building or ptr in self._owned:
            return True
        ref = self._built.get(ptr)
        return ref is not None and ref() is not None

    def storages(self) -> list[int]:
        """Storage addresses of every tensor a builder returned inside the block (alive or not)."""
        return list(self._built)

    def _register(self, out: Any) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):
                self._built[t.untyped_storage().data_ptr()] = weakref.ref(t)

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def builder(*args: Any, **kwargs: Any) -> Any:
            self._building += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                self._building -= 1
            self._register(out)
            return out

        return builder

    def __enter__(self) -> WeightTensors:
        for obj, name in self._builders:
            self._shadowed.append((obj, name, obj.__dict__.get(name, _UNSET)))
            setattr(obj, name, self._wrap(getattr(obj, name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        while self._shadowed:
            obj, name, before = self._shadowed.pop()
            if before is _UNSET:
                delattr(obj, name)
            else:
                setattr(obj, name, before)


_UNSET = object()


class WeightAwareSavedBytes(SavedTensorBytes):
    """:class:`SavedTensorBytes` that also sums, in ``weight_bytes``, the bytes of saved tensors
    that ``weights`` (a :class:`WeightTensors`) says are weights, so that activation memory
    (``bytes - weight_bytes``) can be reported without them."""

    def __init__(self, weights: WeightTensors) -> None:
        super().__init__()
        self._weights = weights
        self.weight_bytes = 0

    def _pack(self, t: Tensor) -> Tensor:
        # Classified when saved: a built weight counts only while it is alive, so an activation
        # allocated later at the address of a freed weight is not mistaken for a weight.
        before = self.current
        super()._pack(t)
        if self.current > before and t.layout == torch.strided:
            if self._weights.is_weight_storage(t.untyped_storage().data_ptr()):
                self.weight_bytes += self.current - before
        return t


def saved_bytes(fn: Callable[[], Any]) -> int:
    """Bytes saved for backward while running ``fn()`` (its result is discarded)."""
    with SavedTensorBytes() as mem:
        fn()
    return mem.bytes


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1,
               device: torch.device | str | None = None) -> list[float]:
    """Wall times in seconds of ``repeats`` runs of ``fn()`` after ``warmup`` runs.

    The device is synchronised before every clock read. Benchmarks keep every run so they can
    report the median (the figure) and the minimum (least disturbed by other load).
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1,
                device: torch.device | str | None = None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    return statistics.median(timed_runs(fn, repeats=repeats, warmup=warmup, device=device))


class CudaPeakMemory:
    """Peak CUDA memory allocated inside the block (``None`` on CPU)."""

    def __init__(self, device: torch.device | str | None) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.peak_bytes: int | None = None

    def __enter__(self) -> CudaPeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
