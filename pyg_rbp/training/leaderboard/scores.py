"""How a leaderboard row is read: its label, its scores as text, which way its metric is better.

The rows of :func:`~pyg_rbp.training.leaderboard.aggregate.rows` are plain dicts (they are also the
board's JSON). The verdicts, the markdown board, the PNG and the TU tables all name and format
them the same way; this module is that one vocabulary, with the comparison every verdict uses
(:func:`meets`).
"""

from __future__ import annotations

from typing import Any

from pyg_rbp.data import metrics

UNAVAILABLE = "not run: data unavailable offline"
"""The status of a row whose dataset has no offline copy (its command is the one to run elsewhere)."""

PERCENT_METRICS: tuple[str, ...] = ("acc", "rocauc", "ap")
"""Metrics shown in percent; the others (RMSE) in the target's units."""



def is_percent(metric: str) -> bool:
    """Whether scores of ``metric`` are shown in percent."""
    return metric in PERCENT_METRICS


def higher_is_better(metric: str) -> bool:
    """Whether a larger score of ``metric`` is better (:func:`pyg_rbp.data.metrics.higher_is_better`)."""
    return metrics.higher_is_better(metric)


def meets(value: float, bar: float, metric: str) -> bool:
    """Whether ``value`` reaches ``bar`` (a threshold or another row's score) under ``metric``:
    at least as high, or at most as low for a lower-is-better metric."""
    return value >= bar if higher_is_better(metric) else value <= bar


def fmt_score(metric: str, mean: float | None, std: float | None) -> str:
    """``"83.64 ± 0.64"`` (percent metrics) or ``"0.9140 ± 0.0760"``; ``"-"`` without a score."""
    if mean is None:
        return "-"
    if is_percent(metric):
        return f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"
    return f"{mean:.4f} ± {(std or 0):.4f}"


def row_label(row: dict[str, Any]) -> str:
    """``"ppr/neumann"`` for a fixed-point row, the model name for a baseline."""
    return f"{row['model']}/{row['grad']}" if row["grad"] else row["model"]


def first_scored(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    """The first row with a test score whose fields equal ``match``."""
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and r["test_mean"] is not None:
            return r
    return None


def fixed_point_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a fixed-point model (they have a gradient mode) with a test score."""
    return [r for r in rows if r["grad"] and r["test_mean"] is not None]


def shared_seeds(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Seeds with a test score in both rows."""
    sa, sb = a.get("test_by_seed", {}), b.get("test_by_seed", {})
    return sorted((s for s in set(sa) & set(sb) if sa[s] is not None and sb[s] is not None), key=int)
