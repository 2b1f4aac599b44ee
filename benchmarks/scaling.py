"""Thin wrapper: ``python benchmarks/scaling.py [options]`` = ``pyg-rbp bench scaling [options]``.

Kept so the benchmark runs from a checkout without the console script installed; all the code
lives in :mod:`pyg_rbp.bench.scaling`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyg_rbp.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", "scaling", *sys.argv[1:]]))
