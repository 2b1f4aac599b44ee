"""The targets ``bench graph-size`` is judged by, as a table, and the verdicts on a result.

A target is data (:data:`TARGETS`: what it says and its bound); :func:`verdicts` only finds the
rows each one needs and compares. Kept apart so that the report and the driver judge alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyg_rbp.bench.graph_size.config import upgrade
from pyg_rbp.bench.graph_size.measure import describe_row
from pyg_rbp.bench.graph_size.specs import parse_graph


@dataclass(frozen=True)
class Target:
    """One target: the sentence of its verdict (``str.format`` fields from the run) and its
    bound (``None`` where the bound is the run's memory limit or there is no number)."""

    text: str
    bound: float | None = None


TARGETS: dict[str, Target] = {
    "saved_ratio": Target("neumann/bptt saved bytes on {graph} (T={max_iter}, K={backward_iter})",
                          bound=1 / 50),
    "neumann_fits": Target("neumann trains {graph} at T={max_iter} with {where} peak (GiB) < {what}"),
    "bptt_cannot_fit": Target("bptt cannot fit {graph} at T={max_iter} within {what}"),
}
"""Neumann/BPTT saved bytes at most 1/50 on every graph; on the largest synthetic graph Neumann
trains under the memory limit (on CUDA: the device's memory) where BPTT cannot."""


def result_row(result: dict[str, Any], graph: str, grad: str) -> dict[str, Any] | None:
    result = upgrade(result)
    max_iter = result["config"]["max_iter"]
    for r in result["results"]:
        if r["graph"] == graph and r["grad"] == grad and r["max_iter"] == max_iter:
            return r
    return None


def bptt_bytes(row: dict[str, Any] | None) -> tuple[int | None, str]:
    """BPTT's saved bytes: measured if it ran, else the prediction; and which of the two."""
    if row is None:
        return None, "-"
    if row.get("status") == "ok" and row.get("saved_bytes"):
        return int(row["saved_bytes"]), "measured"
    if row.get("predicted_saved_bytes"):
        return int(row["predicted_saved_bytes"]), "predicted"
    return None, "-"


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of :data:`TARGETS` that applies to ``result``: target, value, bound, pass
    (``None`` where it could not be measured) and how the value was obtained."""
    result = upgrade(result)
    cfg = result["config"]
    graphs = [parse_graph(g, cfg["degree"]) for g in cfg["graphs"]]
    out: list[dict[str, Any]] = []
    ratio = TARGETS["saved_ratio"]
    for spec in graphs:
        n, b = result_row(result, spec.name, "neumann"), result_row(result, spec.name, "bptt")
        bb, how = bptt_bytes(b)
        nb = n.get("saved_bytes") if n and n.get("status") == "ok" else None
        value = None if nb is None or not bb else nb / bb
        assert ratio.bound is not None
        out.append({"target": ratio.text.format(graph=spec.name, max_iter=cfg["max_iter"],
                                                backward_iter=cfg["backward_iter"]),
                    "value": value, "bound": ratio.bound,
                    "pass": None if value is None else bool(value <= ratio.bound),
                    "how": f"bptt {how}"})
    synthetic = [s for s in graphs if s.synthetic]
    if synthetic:
        big = max(synthetic, key=lambda s: s.num_nodes or 0)
        n, b = result_row(result, big.name, "neumann"), result_row(result, big.name, "bptt")
        if n is not None:
            cuda = n.get("cuda_peak_bytes") is not None
            # On CUDA the limit is the device's memory (RLIMIT_AS is not applied there).
            limit_gb = (n.get("cuda_total_bytes") or 0) / 2**30 if cuda else cfg["memory_limit_gb"]
            what = f"the device's {limit_gb:.0f} GiB" if cuda else f"{limit_gb:g} GiB"
            peak = n.get("cuda_peak_bytes") if cuda else n.get("process_peak_rss_bytes")
            ok = n.get("status") == "ok"
            b_fails = None if b is None else b.get("status") != "ok"
            value = None if peak is None else peak / 2**30
            fields = {"graph": big.name, "max_iter": cfg["max_iter"], "what": what,
                      "where": "CUDA" if cuda else "process"}
            out.append({"target": TARGETS["neumann_fits"].text.format(**fields),
                        "value": value, "bound": limit_gb,
                        "pass": None if peak is None else bool(ok and value < limit_gb),
                        "how": f"neumann status {n.get('status')}"})
            if b is not None:
                out.append({"target": TARGETS["bptt_cannot_fit"].text.format(**fields),
                            "value": None, "bound": None, "pass": b_fails,
                            "how": f"bptt {describe_row(b)}"[:300]})
    return out
