"""Name -> object tables: the extension points of the package, in PyG's resolver style.

A :class:`Registry` maps a name (and its aliases) to what it stands for: a cell design of the
ready-made models (:data:`pyg_rbp.nn.models.CELLS`), a model of the training harness
(:data:`pyg_rbp.training.models.MODELS`). Adding one is one :meth:`Registry.register` call.
Lookups forgive case, ``-``, ``_`` and spaces (as ``torch_geometric.resolver`` does), always
give back the canonical name (which is what configs store and hash), and an unknown name raises
one ``ValueError`` that lists the choices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

__all__ = ["Registry", "normalize_name"]

T = TypeVar("T")


def normalize_name(name: str) -> str:
    """``"Linear_PCA"`` -> ``"linearpca"``: what two spellings of one name share."""
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


class Registry(Generic[T]):
    """Canonical names, with aliases, of the objects of one kind (``kind``: for the messages).

    Example::

        CELLS = Registry("cell")
        CELLS.register("gated", GATED, aliases=("ggnn",))
        CELLS["GGNN"] is GATED; CELLS.canonical("ggnn") == "gated"
        CELLS["lstm"]  # ValueError: unknown cell 'lstm': cell must be one of gated
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lookup: dict[str, str] = {}

    def register(self, name: str, item: T, *, aliases: Sequence[str] = ()) -> T:
        """Add ``item`` under ``name`` (and ``aliases``); a name taken already raises."""
        for key in (name, *aliases):
            norm = normalize_name(key)
            if norm in self._lookup:
                raise ValueError(f"{self.kind} name {key!r} is taken by {self._lookup[norm]!r}")
        self._items[name] = item
        for key in (name, *aliases):
            self._lookup[normalize_name(key)] = name
        return item

    def decorator(self, name: str, *, aliases: Sequence[str] = ()) -> Callable[[T], T]:
        """:meth:`register` as a decorator."""
        return lambda item: self.register(name, item, aliases=aliases)

    def canonical(self, query: str) -> str:
        """The registered name ``query`` (a name or an alias, in any spelling) stands for."""
        name = self._lookup.get(normalize_name(query)) if isinstance(query, str) else None
        if name is None:
            raise ValueError(f"unknown {self.kind} {query!r}: {self.kind} must be one of {', '.join(self)}")
        return name

    def __getitem__(self, query: str) -> T:
        return self._items[self.canonical(query)]

    def __contains__(self, query: object) -> bool:
        return isinstance(query, str) and normalize_name(query) in self._lookup

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self, where: Callable[[T], bool] | None = None) -> tuple[str, ...]:
        """The canonical names, in registration order (of the items ``where`` accepts)."""
        return tuple(n for n, item in self._items.items() if where is None or where(item))

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, [{', '.join(self)}])"
