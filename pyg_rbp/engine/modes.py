"""Names of the gradient modes and their normalisation.

Every public entry point (the engine, the layers, the CLI) accepts a gradient mode by name.
Keeping the canonical names and their aliases in one place means one error message and one
behaviour for a typo everywhere.
"""

from __future__ import annotations

GRAD_MODES: tuple[str, ...] = ("bptt", "tbptt", "rbp", "cg", "neumann")
"""Canonical gradient-mode names, in the order the paper introduces them."""

IMPLICIT_MODES: tuple[str, ...] = ("rbp", "cg", "neumann")
"""Modes that differentiate the fixed point implicitly: memory independent of ``max_iter``."""

_ALIASES = {
    "bptt": "bptt",
    "tbptt": "tbptt",
    "truncated_bptt": "tbptt",
    "rbp": "rbp",
    "cg": "cg",
    "cg_rbp": "cg",
    "cgrbp": "cg",
    "neumann": "neumann",
    "neumann_rbp": "neumann",
    "neumannrbp": "neumann",
}


def normalize_grad_mode(name: str) -> str:
    """Return the canonical name of a gradient mode.

    Case-insensitive; ``-`` and ``_`` are interchangeable, so ``"CG-RBP"``, ``"cg_rbp"`` and
    ``"cg"`` all mean conjugate-gradient RBP.

    Raises:
        ValueError: if ``name`` is not a known mode; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise ValueError(f"grad must be a string, one of {GRAD_MODES}; got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in _ALIASES:
        raise ValueError(
            f"unknown gradient mode {name!r}; valid modes are {', '.join(GRAD_MODES)} "
            "(aliases: cg_rbp, neumann_rbp)"
        )
    return _ALIASES[key]


def parse_grad_modes(spec: str) -> list[str]:
    """Parse a comma-separated list of modes (``"all"`` means every mode) for CLIs.

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
