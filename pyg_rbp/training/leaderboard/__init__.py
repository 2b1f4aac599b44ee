"""The dataset leaderboard (moved from ``pyg_rbp/training/leaderboard.py``; split by job next)."""

from pyg_rbp.training.leaderboard.running import *  # noqa: F403
from pyg_rbp.training.leaderboard.running import (  # noqa: F401 - used by tu_board and the tests
    CellFailed,
    Entry,
    Terminated,
    _mean_curve,
    _row_label,
)
