"""The targets ``bench solvers`` is judged by, as a table, and the verdicts on a result.

Each target is a row of :data:`TARGETS` (the sentence of its verdict and its bound: the measured
ratio must be at most the bound); :func:`verdicts` only finds the rows of the result it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyg_rbp.bench.solvers.config import FORWARD_TOLS, K_GRID


@dataclass(frozen=True)
class Target:
    """One target: its sentence (``str.format`` fields ``map``, ``tol``, ``k``) and its bound."""

    text: str
    bound: float


TARGETS: dict[str, Target] = {
    "anderson_steps": Target("{map}: Anderson steps / plain steps to 1e-6", 0.5),
    "anderson_time": Target("{map}: Anderson time / plain time to 1e-6", 0.7),
    "vs_torchdeq_anderson": Target("{map}: our Anderson / torchdeq Anderson time to {tol:g}", 0.5),
    "vs_torchdeq_anderson_unreached": Target("{map}: our Anderson / torchdeq Anderson time", 0.5),
    "gmres_vjps": Target("{map}: gmres VJPs / Neumann VJPs to grad error 1e-4", 0.5),
    "gmres_vjps_bound": Target("{map}: gmres VJPs / Neumann VJPs to grad error 1e-4 "
                               "(Neumann not there in {k}: upper bound)", 0.5),
    "training_step": Target("{map}: our best training step / torchdeq's best at grad error {tol:g}",
                            0.7),
}
"""Anderson halves the plain steps and takes at most 0.7 of their time where plain iteration
needs 100 steps or more; ours at most half of torchdeq's Anderson time; GMRES at most half of
Neumann's Jacobian products; our best training step at most 0.7 of torchdeq's."""


def _judge(key: str, value: float | None, **fields: Any) -> dict[str, Any]:
    """The verdict of target ``key`` on ``value`` (``pass`` ``None`` where there is no value)."""
    target = TARGETS[key]
    return {"target": target.text.format(**fields), "value": value, "bound": target.bound,
            "pass": None if value is None else value <= target.bound}


def _best(rows: list[dict[str, Any]], impl: str, tol: float) -> dict[str, Any] | None:
    ok = [r for r in rows if r["impl"] == impl and r.get("step_time") is not None
          and r.get("grad_error") is not None and r["grad_error"] <= 2 * tol]
    return min(ok, key=lambda r: r["step_time"]) if ok else None


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of :data:`TARGETS` that applies: value, bound, pass (None where it does not apply)."""
    out: list[dict[str, Any]] = []
    fwd = result.get("forward", {})
    for name, rows in fwd.items():
        by = {(r["impl"], r["solver"]): r for r in rows}
        plain, ours = by[("ours", "iteration")], by[("ours", "anderson")]
        theirs = by[("torchdeq", "anderson")]
        if plain["steps_1e-06"] is not None and plain["steps_1e-06"] >= 100:
            s_ratio = (None if ours["steps_1e-06"] is None
                       else ours["steps_1e-06"] / plain["steps_1e-06"])
            t_ratio = (None if ours["time_1e-06"] is None
                       else ours["time_1e-06"] / plain["time_1e-06"])
            out.append(_judge("anderson_steps", s_ratio, map=name))
            out.append(_judge("anderson_time", t_ratio, map=name))
        # ours vs torchdeq's Anderson at the tightest residual both reach
        for tol in sorted(FORWARD_TOLS):
            a, b = ours.get(f"time_{tol:g}"), theirs.get(f"time_{tol:g}")
            if a is not None and b is not None:
                out.append(_judge("vs_torchdeq_anderson", a / b, map=name, tol=tol))
                break
        else:
            reached = ours.get("time_0.0001") is not None
            out.append({**_judge("vs_torchdeq_anderson_unreached", None, map=name),
                        "pass": True if reached else None,
                        "note": ("only ours reached 1e-4" if reached else
                                 "neither Anderson reached 1e-4")})
    for name, rows in result.get("adjoint", {}).items():
        by = {(r["impl"], r["mode"]): r for r in rows}
        if ("ours", "neumann") not in by or ("ours", "gmres") not in by:
            continue
        n, g = by[("ours", "neumann")], by[("ours", "gmres")]
        if n["products_0.0001"] is not None:
            v = (None if g["products_0.0001"] is None else g["products_0.0001"] / n["products_0.0001"])
            out.append(_judge("gmres_vjps", v, map=name))
        else:
            # Neumann did not get there within the largest K: the ratio is an upper bound
            gp = g["products_0.0001"]
            v = None if gp is None else gp / max(K_GRID)
            out.append(_judge("gmres_vjps_bound", v, map=name, k=max(K_GRID)))
    for name, rows in result.get("training", {}).items():
        tol = result["config"]["train_tol"]
        ours, theirs = _best(rows, "ours", tol), _best(rows, "torchdeq", tol)
        v = None if ours is None or theirs is None else ours["step_time"] / theirs["step_time"]
        out.append({**_judge("training_step", v, map=name, tol=tol),
                    "note": (f"no torchdeq pair reached grad error {tol:g} within "
                             f"{max(K_GRID)} backward iterations" if theirs is None else None),
                    "ours": None if ours is None else f"{ours['solver']}+{ours['mode']}",
                    "torchdeq": None if theirs is None else f"{theirs['solver']}+{theirs['mode']}"})
    return out
