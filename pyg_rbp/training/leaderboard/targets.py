"""The board's targets as a table, and the one function that judges the rows against them.

Each target is a row of :data:`TARGETS`: the dataset (or a pattern of datasets), the protocol of
the rows compared, the comparison, the bar when it is a number (a threshold) rather than another
row, the metric, and where the target comes from. :func:`judge` is generic: it picks the row to
judge and the row (or threshold) it must reach as the target's :class:`Comparison` says, and
decides with :func:`~pyg_rbp.training.leaderboard.scores.meets`; the comparison only phrases the
verdict. Every number in a verdict is read from the rows, never typed in.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pyg_rbp.data.protocols import KFOLD
from pyg_rbp.training.leaderboard import tu
from pyg_rbp.training.leaderboard.scores import (
    UNAVAILABLE,
    first_scored,
    fixed_point_rows,
    fmt_score,
    higher_is_better,
    meets,
    row_label,
    shared_seeds,
)
from pyg_rbp.training.runner import mean_std

Row = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One target of the board (a row of :data:`TARGETS`)."""

    dataset: str
    """A dataset, or a pattern (``"ogbg-*"``, ``"*"``): every such dataset on the board, in name order."""
    protocol: str | None
    """The protocol of the rows compared; ``None``: the dataset's rows of every protocol."""
    comparison: str
    """How the rows are compared and the verdict phrased: a key of :data:`COMPARISONS`."""
    metric: str | None
    """The metric the bar is in; ``None``: the rows' own (OGB fixes one per dataset)."""
    bar: float | None
    """The score to reach (a fraction for percent metrics); ``None`` where the bar is another row."""
    why: str
    """Where the target comes from."""


TARGETS: tuple[Target, ...] = (
    Target("cora", "paper", "paper-claim", "acc", None,
           "the paper's claim (Liao et al. 2018): Neumann-RBP at least as accurate as BPTT"),
    Target("citeseer", "paper", "paper-claim", "acc", None,
           "the paper's claim (Liao et al. 2018): Neumann-RBP at least as accurate as BPTT"),
    Target("cora", "public", "threshold", "acc", 0.83,
           "the bar set for the best fixed-point row on the public split when the board was "
           "specified (no published source for it is recorded in the repository)"),
    Target("citeseer", "public", "threshold", "acc", 0.72,
           "the bar set for the best fixed-point row on the public split when the board was "
           "specified (no published source for it is recorded in the repository)"),
    Target("ogbg-*", None, "fixed-point-vs-gin", None, None,
           "the fixed-point graph model at least as good as GIN in the same harness and budget"),
    Target("*", KFOLD, "tu-vs-gin", "acc", None,
           "the fixed-point cell at least as good as GIN in the same harness and budget, and the "
           "published IGNN figure (Gu et al. 2020) where one was found"),
)


@dataclass
class Verdict:
    """The outcome of one target on one dataset."""

    target: Target
    dataset: str
    rows: list[Row]
    """The rows of the dataset the target compares."""
    candidate: Row | None
    """The row judged (``None``: no finished row qualifies)."""
    reference: Row | None
    """The row it is judged against (``None`` for a threshold, or when no such row finished)."""
    value: float | None = None
    bar: float | None = None
    ok: bool | None = None
    """Whether the candidate reaches the bar; ``None``: not checked (a row missing)."""
    basis: str = ""
    """Which seeds the two numbers average over."""


@dataclass(frozen=True)
class Comparison:
    """How a kind of target picks its rows, and how its verdict reads."""

    candidate: Callable[[list[Row]], Row | None]
    reference: Callable[[list[Row]], Row | None] | None
    """``None``: the bar is the target's threshold."""
    phrase: Callable[[Verdict], str | None]
    """The verdict's line on the board (``None``: no line)."""
    paired: bool = False
    """Compare the means over the seeds both rows finished (each seed one split), when there are any."""


def _row(**match: Any) -> Callable[[list[Row]], Row | None]:
    return lambda rows: first_scored(rows, **match)


def _best_by_validation(rows: list[Row]) -> Row | None:
    """The fixed-point row of best validation score (what a user choosing without test would take)."""
    fps = fixed_point_rows(rows)
    return max(fps, key=lambda r: r["val_mean"] if r["val_mean"] is not None else -1) if fps else None


def _best_by_test(rows: list[Row]) -> Row | None:
    fps = fixed_point_rows(rows)
    if not fps:
        return None
    return max(fps, key=lambda r: r["test_mean"] if higher_is_better(r["metric"]) else -r["test_mean"])


def judge(target: Target, rows: Sequence[Row]) -> list[Verdict]:
    """The verdicts of ``target`` on ``rows``: one per dataset it names (or matches)."""
    comparison = COMPARISONS[target.comparison]
    if any(ch in target.dataset for ch in "*?["):
        datasets = sorted({r["dataset"] for r in rows if fnmatchcase(r["dataset"], target.dataset)
                           and target.protocol in (None, r["protocol"])})
    else:
        datasets = [target.dataset]
    out = []
    for ds in datasets:
        group = [r for r in rows if r["dataset"] == ds and target.protocol in (None, r["protocol"])]
        cand = comparison.candidate(group)
        ref = comparison.reference(group) if comparison.reference is not None else None
        verdict = Verdict(target, ds, group, cand, ref)
        if cand is not None and (comparison.reference is None or ref is not None):
            verdict.value, verdict.bar, verdict.basis = _values(target, comparison, cand, ref)
            verdict.ok = meets(verdict.value, verdict.bar, target.metric or cand["metric"])
        out.append(verdict)
    return out


def _values(target: Target, comparison: Comparison, cand: Row,
            ref: Row | None) -> tuple[float, float, str]:
    if ref is None:
        assert target.bar is not None, f"target {target} has neither a reference row nor a bar"
        return cand["test_mean"], target.bar, f"{len(cand['seeds'])} seed(s)"
    if comparison.paired:  # compare like with like: the seeds (splits) both rows finished
        common = shared_seeds(cand, ref)
        if common:
            a, b = (statistics.fmean(r["test_by_seed"][s] for s in common) for r in (cand, ref))
            return a, b, f"mean over the {len(common)} seed(s) both finished"
        return (cand["test_mean"], ref["test_mean"],
                f"{len(cand['seeds'])} and {len(ref['seeds'])} seed(s), none shared")
    return cand["test_mean"], ref["test_mean"], f"{len(cand['seeds'])} seed(s)"


def target_checks(rows_: list[Row]) -> list[str]:
    """Plain-language verdicts on every target of :data:`TARGETS`, in the table's order, then the
    datasets that could not run."""
    lines = []
    for target in TARGETS:
        for verdict in judge(target, rows_):
            line = COMPARISONS[target.comparison].phrase(verdict)
            if line is not None:
                lines.append(line)
    missing = sorted({r["dataset"] for r in rows_ if r["status"] == UNAVAILABLE})
    if missing:
        lines.append(f"- {', '.join(missing)}: {UNAVAILABLE}; the commands in their rows are the ones to run "
                     "on a machine with the data.")
    return lines


# -- the verdicts' phrasing -------------------------------------------------------------------------

def _paper_claim(v: Verdict) -> str | None:
    head = f"- Paper claim on {v.dataset} (paper protocol, Neumann-RBP at least as accurate as BPTT): "
    nm, bp = v.candidate, v.reference
    if v.ok is None:
        if not v.rows:
            return None
        missing = [g for g, r in (("Neumann-RBP", nm), ("BPTT", bp)) if r is None]
        return head + f"**not checked yet**: no finished {' or '.join(missing)} run."
    assert nm is not None and bp is not None and v.value is not None and v.bar is not None
    common = shared_seeds(nm, bp)
    return (head + f"**{'holds' if v.ok else 'does not hold'}** here: Neumann {100 * v.value:.2f}% vs "
            f"BPTT {100 * v.bar:.2f}% test ({v.basis}, {nm['epochs']} steps)."
            + _paired_difference(nm, bp, "Neumann", "BPTT") + _divergence_note(common, nm, bp)
            + (f" {nm['note']}." if nm["note"] else ""))


def _threshold(v: Verdict) -> str | None:
    best = v.candidate
    if best is None or v.bar is None:
        return None
    top = max(fixed_point_rows(v.rows), key=lambda r: r["test_mean"])
    return (f"- Public split {v.dataset}, target >= {100 * v.bar:.1f}%: best fixed-point row by validation "
            f"({row_label(best)}) reaches {100 * best['test_mean']:.2f} ± {100 * best['test_std']:.2f}% "
            f"test over {len(best['seeds'])} seed(s): **{'met' if v.ok else 'missed'}**"
            + ("" if v.ok else f" by {100 * (v.bar - best['test_mean']):.2f} points")
            + (f" (highest test among fixed-point rows: {row_label(top)} {100 * top['test_mean']:.2f}%)"
               if top is not best else "") + ".")


def _fixed_point_vs_gin(v: Verdict) -> str | None:
    fp, gin = v.candidate, v.reference
    if fp is None or gin is None:
        return None
    metric = gin["metric"]
    return (f"- {v.dataset} ({metric}, {'higher' if higher_is_better(metric) else 'lower'} is better): "
            f"fixed-point {row_label(fp)} {fmt_score(metric, fp['test_mean'], fp['test_std'])} vs GIN "
            f"{fmt_score(metric, gin['test_mean'], gin['test_std'])} (same harness and budget, "
            f"{len(fp['seeds'])} seed(s)): **{'matches or beats GIN' if v.ok else 'below GIN'}**.")


def _paired_difference(a: Row, b: Row, name_a: str, name_b: str) -> str:
    """``a - b`` test difference over the seeds both rows finished (a seed fixes the split and the
    initialisation, so the pairs share their data): mean, sample std and the 95 % Student-t
    interval of the mean."""
    # scipy comes only through scikit-learn (not a declared dependency): imported when needed
    from scipy.stats import t as student_t

    common = shared_seeds(a, b)
    if len(common) < 2:
        return ""
    diffs = [100 * (a["test_by_seed"][s] - b["test_by_seed"][s]) for s in common]
    mean, std = mean_std(diffs)
    assert mean is not None and std is not None
    half = float(student_t.ppf(0.975, len(diffs) - 1)) * std / len(diffs) ** 0.5
    verdict = ("includes zero" if abs(mean) <= half
               else f"excludes zero: {name_a} {'ahead' if mean > 0 else 'behind'}")
    wins = sum(d >= 0 for d in diffs)
    return (f" Paired by seed ({len(diffs)} seeds): {name_a} − {name_b} = {mean:+.2f} ± {std:.2f} points, "
            f"95 % interval of the mean {mean - half:+.2f} to {mean + half:+.2f} ({verdict}); "
            f"{name_a} >= {name_b} on {wins} of {len(diffs)} seeds.")


def _divergence_note(seeds: Sequence[str], a: Row, b: Row) -> str:
    """Which compared seeds diverged in which row (they count, with their pre-divergence model),
    and the two means without them, so a reader sees whether the verdict rests on them. With no
    shared seeds (row means compared) every diverged seed of either row is named."""
    hits = [(row_label(r), [s for s in (seeds or r.get("diverged", {})) if s in r.get("diverged", {})])
            for r in (a, b)]
    named = [(label, ss) for label, ss in hits if ss]
    if not named:
        return ""
    out = " Diverged and counted with the best model before it: " + "; ".join(
        f"{label} on seed(s) {', '.join(ss)}" for label, ss in named) + "."
    rest = [s for s in seeds if all(s not in r.get("diverged", {}) for r in (a, b))]
    if rest:
        ma, mb = (100 * statistics.fmean(r["test_by_seed"][s] for s in rest) for r in (a, b))
        out += (f" Without those seeds ({len(rest)} left): {row_label(a)} {ma:.2f}% vs "
                f"{row_label(b)} {mb:.2f}%.")
    return out


COMPARISONS: dict[str, Comparison] = {
    "paper-claim": Comparison(_row(grad="neumann"), _row(grad="bptt"), _paper_claim, paired=True),
    "threshold": Comparison(_best_by_validation, None, _threshold),
    "fixed-point-vs-gin": Comparison(_best_by_test, _row(model="gin"), _fixed_point_vs_gin),
    "tu-vs-gin": Comparison(_best_by_validation, _row(model="gin"), tu.verdict_line),
}
"""The comparisons a :class:`Target` can name."""
