r"""Gradient modes: what a fixed-point solve records and how its backward gets the adjoint.

A gradient mode is a registered :class:`GradMode` object, not a branch in the solver: the
engine (:func:`pyg_rbp.fixed_point`), the layers and the CLI look modes up by name here, so a
mode registered with :func:`register_grad_mode` works everywhere without other edits (as
torchdeq's solver table and PyG's resolvers do for their extension points). Canonical names,
aliases and the one error message for a typo live here too.

What a mode records (:attr:`GradMode.records`):

* ``"all"``: every forward step, differentiated by autograd (BPTT).
* ``"last"``: the last ``backward_iter`` forward steps (truncated BPTT).
* ``"one"``: one step at the solution; the backward solves the adjoint system
  :math:`(I - J^\top) z = g` with :attr:`GradMode.adjoint` (RBP, CG-RBP, Neumann-RBP, GMRES).
  Memory does not depend on the number of forward steps.
* ``"from_solution"``: ``backward_iter`` damped steps
  :math:`h \leftarrow (1-\lambda) h + \lambda f(h)` taken from the detached solution, then
  autograd through them (the phantom gradient of Geng et al., 2021).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyg_rbp.engine.adjoint import cg_solve, gmres_solve, neumann_solve, rbp_solve

GRAD_MODES: tuple[str, ...] = ("bptt", "tbptt", "rbp", "cg", "neumann")
"""The five gradient modes of the paper, in the order it introduces them (``"all"`` in the CLIs).
Every registered mode is listed by :func:`grad_mode_names`."""

IMPLICIT_MODES: tuple[str, ...] = ("rbp", "cg", "neumann")
"""The paper's modes that differentiate the fixed point implicitly (memory independent of T).
Any registered mode: ``get_grad_mode(name).implicit``."""

RECORDS = ("all", "last", "one", "from_solution")

AdjointSolver = Callable[..., Any]
"""``adjoint(lin, g, iters, tol, **options) -> (z, iterations_spent)``; ``lin`` is a
:class:`~pyg_rbp.engine.adjoint.StepLinearization` of the recorded step."""


@dataclass(frozen=True)
class GradMode:
    r"""One gradient mode.

    Args:
        name: canonical name (lower case).
        records: ``"all"``, ``"last"``, ``"one"`` or ``"from_solution"`` (see the module).
        adjoint: for ``records="one"``: ``adjoint(lin, g, iters, tol, **options)`` returning
            ``(z, iterations)`` with :math:`z \approx (I - J^\top)^{-1} g`.
        min_backward_iter: smallest ``backward_iter`` the mode accepts.
        aliases: other accepted spellings.
        options: the mode's own settings (``grad_options`` of :func:`pyg_rbp.fixed_point`) and
            their defaults; any other key is an error.
        description: one line for help texts.
    """

    name: str
    records: str
    adjoint: AdjointSolver | None = None
    min_backward_iter: int = 1
    aliases: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.records not in RECORDS:
            raise ValueError(f"GradMode.records must be one of {RECORDS}, got {self.records!r}")
        if self.records == "one" and not callable(self.adjoint):
            raise ValueError(f"grad mode {self.name!r} records one step: it needs an adjoint solver")

    @property
    def implicit(self) -> bool:
        """Records one step only: memory independent of the number of forward steps."""
        return self.records == "one"

    def resolve_options(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """The mode's options with ``given`` applied; unknown keys are a ValueError."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"grad_options {unknown} not understood by grad={self.name!r} "
                             f"(its options: {known})")
        return {**self.options, **given}


_MODES: dict[str, GradMode] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_grad_mode(name: str, mode: GradMode | AdjointSolver, *, replace: bool = False,
                       **kwargs: Any) -> GradMode:
    """Register a gradient mode under ``name`` and return it.

    ``mode`` is a :class:`GradMode`, or an adjoint solver ``adjoint(lin, g, iters, tol,
    **options) -> (z, iterations)``, shorthand for ``GradMode(name, "one", adjoint, **kwargs)``.
    The mode then works in :func:`pyg_rbp.fixed_point`, :class:`~pyg_rbp.nn.FixedPointConv` and
    ``pyg-rbp train --grad``. Registering a taken name (or alias) is an error unless ``replace``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a grad mode needs a non-empty name, got {name!r}")
    key = _key(name)
    if not isinstance(mode, GradMode):
        if not callable(mode):
            raise ValueError(f"register_grad_mode: expected a GradMode or an adjoint solver, got "
                             f"{type(mode).__name__}")
        mode = GradMode(name=key, records="one", adjoint=mode, **kwargs)
    elif mode.name != key:
        mode = GradMode(**{**mode.__dict__, "name": key})
    names = (key, *(_key(a) for a in mode.aliases))
    taken = [n for n in names if n in _ALIASES and _ALIASES[n] != key]
    if (key in _MODES or taken) and not replace:
        raise ValueError(f"grad mode name(s) {sorted({*taken, key} & set(_ALIASES))} already "
                         "registered; pass replace=True to override")
    _MODES[key] = mode
    for n in names:
        _ALIASES[n] = key
    return mode


def unregister_grad_mode(name: str) -> None:
    """Remove a registered mode (and its aliases); the paper's five cannot be removed."""
    key = normalize_grad_mode(name)
    if key in GRAD_MODES:
        raise ValueError(f"grad mode {key!r} is built in and cannot be removed")
    del _MODES[key]
    for alias in [a for a, k in _ALIASES.items() if k == key]:
        del _ALIASES[alias]


def grad_mode_names() -> tuple[str, ...]:
    """Every registered mode's canonical name, the paper's five first."""
    return tuple(_MODES)


def normalize_grad_mode(name: str) -> str:
    """Return the canonical name of a gradient mode.

    Case-insensitive; ``-`` and ``_`` are interchangeable, so ``"CG-RBP"``, ``"cg_rbp"`` and
    ``"cg"`` all mean conjugate-gradient RBP.

    Raises:
        ValueError: if ``name`` is not a registered mode; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise ValueError(f"grad must be a string, one of {grad_mode_names()}; got {type(name).__name__}")
    key = _key(name)
    if key not in _ALIASES:
        raise ValueError(
            f"unknown gradient mode {name!r}; valid modes are {', '.join(grad_mode_names())} "
            "(aliases: cg_rbp, neumann_rbp)"
        )
    return _ALIASES[key]


def get_grad_mode(name: str | GradMode) -> GradMode:
    """The registered :class:`GradMode` called ``name`` (any alias; a GradMode passes through)."""
    if isinstance(name, GradMode):
        return name
    return _MODES[normalize_grad_mode(name)]


def parse_grad_modes(spec: str) -> list[str]:
    """Parse a comma-separated list of modes (``"all"`` means the paper's five) for CLIs.

    A mode named twice (also through an alias, ``cg`` and ``cg_rbp``) is a :class:`ValueError`:
    training it twice would count its runs as extra seeds.
    """
    if spec.strip().lower() == "all":
        return list(GRAD_MODES)
    modes = [normalize_grad_mode(s) for s in spec.split(",") if s.strip()]
    repeated = sorted({m for m in modes if modes.count(m) > 1})
    if repeated:
        raise ValueError(f"gradient mode(s) {', '.join(repeated)} given more than once in {spec!r}")
    return modes


def _register_builtins() -> None:
    register_grad_mode("bptt", GradMode("bptt", "all", min_backward_iter=0,
                                        description="back-propagation through every forward step"))
    register_grad_mode("tbptt", GradMode("tbptt", "last", aliases=("truncated_bptt",),
                                         description="back-propagation through the last K steps"))
    register_grad_mode("rbp", GradMode("rbp", "one", rbp_solve,
                                       description="Almeida-Pineda iteration z <- J^T z + g"))
    register_grad_mode("cg", GradMode("cg", "one", cg_solve, aliases=("cg_rbp", "cgrbp"),
                                      description="conjugate gradient on the normal equations"))
    register_grad_mode("neumann", GradMode(
        "neumann", "one", neumann_solve, min_backward_iter=0, aliases=("neumann_rbp", "neumannrbp"),
        description="truncated Neumann series sum_k (J^T)^k g"))
    register_grad_mode("gmres", GradMode(
        "gmres", "one", gmres_solve, options={"restart": 30},
        description="restarted GMRES on (I - J^T) z = g, one VJP per iteration"))
    register_grad_mode("phantom", GradMode(
        "phantom", "from_solution", options={"damping": 0.5},
        description="phantom gradient: K damped steps from the solution, differentiated"))


_register_builtins()
