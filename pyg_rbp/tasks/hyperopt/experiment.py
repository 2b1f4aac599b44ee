"""A hyperparameter-optimisation experiment: every gradient mode on one task, resumable.

``pyg-rbp hyperopt`` calls :func:`run_experiment`. It measures, for each gradient mode, the
first hypergradient against BPTT's on the same starting point, meta-trains with it, and
evaluates the hyperparameters before and after tuning on the meta-training episode and on fresh
episodes (initial weights and batch orders never seen while tuning). Each finished mode is
written to the JSON file at once (atomically, with the markdown table and the PNG beside it), so
an interrupted run resumes where it stopped: a rerun with the same settings skips every mode
that is already in the file. Resuming follows the one policy of
:class:`pyg_rbp.results.ResumableResults`: the settings that change the numbers (task, steps,
seeds, ...) are the file's ``config_key``, a unit is one mode's row of ``results``, and a file
written with other settings is refused (:class:`~pyg_rbp.results.ResultsFileConflict`) unless
``fresh``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pyg_rbp.engine import normalize_grad_mode
from pyg_rbp.results import ResumableResults, atomic_write_text, environment
from pyg_rbp.tasks.hyperopt.meta import (
    cosine,
    evaluate_hyperparameters,
    hypergradient,
    last_step_spectral_radius,
    memory_scaling,
    meta_train,
)
from pyg_rbp.tasks.hyperopt.problems import TASKS, InnerProblem, load_task
from pyg_rbp.tasks.hyperopt.report import RENAMED, plot_curves, render_markdown, upgrade

DTYPES = {"float32": torch.float32, "float64": torch.float64}
KIND = "pyg_rbp.hyperopt"


@dataclass
class ExperimentConfig:
    """Everything that determines the numbers of a run (``grads`` aside: modes can be added)."""

    task: str
    grads: list[str]
    meta_steps: int = 100
    max_iter: int | None = None
    backward_iter: int | None = None
    meta_lr: float = 0.05
    lr_decay_at: int | None = None
    seed: int = 0
    resample: bool = False
    eval_seeds: list[int] = field(default_factory=lambda: [1000, 1001, 1002])
    batch_size: int | None = None
    meta_split: str | None = None
    final_full_batch: bool = True
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        defaults = TASKS[self.task]
        self.grads = [normalize_grad_mode(g) for g in self.grads]
        if not self.grads:
            raise ValueError("at least one gradient mode is needed")
        if len(set(self.grads)) != len(self.grads):
            raise ValueError(f"gradient modes repeat: {self.grads}")
        # None means "the task's default"; an explicit 0 is validated (and rejected) below
        self.max_iter = defaults.max_iter if self.max_iter is None else self.max_iter
        self.backward_iter = defaults.backward_iter if self.backward_iter is None else self.backward_iter
        self.meta_split = defaults.meta_split if self.meta_split is None else self.meta_split
        if self.task != "gcn-cora":
            self.batch_size = defaults.batch_size if self.batch_size is None else self.batch_size
            if not isinstance(self.batch_size, int) or self.batch_size < 1:
                raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        self.lr_decay_at = self.meta_steps // 2 if self.lr_decay_at is None else self.lr_decay_at
        for name in ("meta_steps", "max_iter", "backward_iter"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.backward_iter > self.max_iter:
            raise ValueError(f"backward_iter K={self.backward_iter} exceeds max_iter={self.max_iter}")
        if not self.meta_lr > 0:
            raise ValueError(f"meta_lr must be > 0, got {self.meta_lr!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if not self.eval_seeds:
            raise ValueError("eval_seeds must not be empty")

    def key(self) -> dict[str, Any]:
        """The settings two runs must share for their results to sit in one file."""
        out = asdict(self)
        out.pop("grads")
        return out


def _row_summary(config: ExperimentConfig, run, hyper, problem: InnerProblem, initial: dict,
                 reference: list[float], wall_s: float) -> dict[str, Any]:
    train_ep = evaluate_hyperparameters(problem, hyper, max_iter=config.max_iter, seeds=[config.seed])
    fresh = evaluate_hyperparameters(problem, hyper, max_iter=config.max_iter, seeds=config.eval_seeds)
    cos = cosine(run.first_hypergradient, reference) if run.first_hypergradient else None
    before_train, before_fresh = initial["train_episode"], initial["fresh_episodes"]
    return {
        "grad": run.grad,
        "status": run.status,
        "meta_steps_done": len(run.curve),
        "hypergrad_cosine_vs_bptt": cos,
        "first_hypergrad_norm": (float(torch.tensor(run.first_hypergradient).norm())
                                 if run.first_hypergradient else None),
        "meta_objective": train_ep["meta_objective"],
        "meta_objective_initial": before_train["meta_objective"],
        "meta_objective_decrease": before_train["meta_objective"] - train_ep["meta_objective"],
        "meta_objective_fresh": fresh["meta_objective"],
        "meta_objective_fresh_initial": before_fresh["meta_objective"],
        "val_acc_before": before_fresh["val_acc"],
        "val_acc_after": fresh["val_acc"],
        "test_acc_before": before_fresh["test_acc"],
        "test_acc_after": fresh["test_acc"],
        "train_acc_after": fresh["train_acc"],
        "meta_step_time_s": run.meta_step_time_s,
        "saved_bytes": run.saved_bytes,
        "cuda_peak_bytes": run.cuda_peak_bytes,
        "wall_s": wall_s,
        "final_hyperparameters": hyper.readable(),
        "final_hyperparameters_raw": run.final_hyper,
        "first_hypergradient": run.first_hypergradient,
        "curve": run.curve,
        "step_times_s": run.step_times,
    }


def run_experiment(config: ExperimentConfig, *, json_path: str | Path | None = None,
                   png_path: str | Path | None = None, md_path: str | Path | None = None,
                   root: str | Path | None = None, memory_steps: Sequence[int] = (),
                   cosine_sweep: Sequence[int] = (), fresh: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the experiment; returns the JSON document that was written.

    Args:
        config: the settings.
        json_path, png_path, md_path: outputs (each optional); written after every mode.
        root: data root for the datasets.
        memory_steps: also count the saved bytes of one hypergradient per mode at these
            numbers of inner steps (e.g. ``(100, 400)``) and report the ratios.
        cosine_sweep: also measure the cosine with BPTT of Neumann(K) and TBPTT(K) for these
            ``K`` at the starting point (a diagnostic of the truncation).
        fresh: ignore results already in ``json_path`` (else a file of other settings raises
            :class:`~pyg_rbp.results.ResultsFileConflict`).
        progress: tqdm progress bars.
        log: where status lines go.
    """
    json_path = Path(json_path) if json_path else None
    if md_path is None and json_path is not None:
        md_path = json_path.with_suffix(".md")
    t_start = time.perf_counter()
    device = torch.device(config.device)
    problem = load_task(config.task, root=root, device=device, dtype=DTYPES[config.dtype],
                        batch_size=config.batch_size, meta_split=config.meta_split,
                        final_full_batch=config.final_full_batch)
    hyper0 = problem.hyperparameters()
    store = ResumableResults(json_path, config.key(), key=lambda r: r["grad"], fresh=fresh,
                             settings_field="config_key", units_field="results", renamed=RENAMED)
    doc = store.extra  # everything but the key and the rows, resumed from the file
    doc.update(upgrade(doc))  # a file of an older vocabulary: its keys under today's names
    for old in set(RENAMED) & set(doc):
        del doc[old]
    doc.update(kind=KIND, task=config.task, description=TASKS[config.task].description,
               config=asdict(config), environment=environment(device),
               hyperparameter_names=hyper0.names())

    def save() -> None:
        store.units.sort(key=lambda r: GRAD_ORDER.get(r["grad"], 99))
        store.write()
        full = store.document()
        if md_path is not None:
            atomic_write_text(md_path, render_markdown(full))
        if png_path is not None and full["results"]:
            plot_curves(full, png_path)

    if "initial" not in doc:
        log(f"[{config.task}] evaluating the starting hyperparameters")
        doc["initial"] = {
            "hyperparameters": hyper0.readable(),
            "train_episode": evaluate_hyperparameters(problem, hyper0, max_iter=config.max_iter,
                                                      seeds=[config.seed]),
            "fresh_episodes": evaluate_hyperparameters(problem, hyper0, max_iter=config.max_iter,
                                                       seeds=config.eval_seeds),
        }
    if "reference" not in doc:
        log(f"[{config.task}] BPTT hypergradient and last-step spectral radius at the starting point")
        ref = hypergradient(problem, hyper0, grad="bptt", max_iter=config.max_iter,
                            backward_iter=config.backward_iter, seed=config.seed)
        doc["reference"] = {
            "bptt_first_hypergradient": ref.flat().cpu().tolist(),
            "last_step_spectral_radius": last_step_spectral_radius(
                problem, hyper0, max_iter=config.max_iter, seed=config.seed),
        }
        save()
    reference = doc["reference"]["bptt_first_hypergradient"]

    for grad in config.grads:
        if store.done(grad):
            log(f"[{config.task}] {grad}: already in {json_path}, skipped")
            continue
        bar = tqdm(total=config.meta_steps, desc=f"{config.task} {grad}", disable=not progress)

        def tick(k: int, value: float, bar=bar) -> None:
            bar.update(1)
            bar.set_postfix(meta=f"{value:.4f}")

        t0 = time.perf_counter()
        run, hyper = meta_train(problem, grad=grad, meta_steps=config.meta_steps,
                                max_iter=config.max_iter, backward_iter=config.backward_iter,
                                meta_lr=config.meta_lr, lr_decay_at=config.lr_decay_at,
                                seed=config.seed, resample=config.resample, progress=tick)
        bar.close()
        row = _row_summary(config, run, hyper, problem, doc["initial"], reference,
                           time.perf_counter() - t0)
        store.add(row)
        save()
        log(f"[{config.task}] {grad}: {run.status}; meta objective {_num(row['meta_objective_initial'])} -> "
            f"{_num(row['meta_objective'])}, cosine vs BPTT {_num(row['hypergrad_cosine_vs_bptt'])}, "
            f"{_num(row['meta_step_time_s'])} s/meta step, saved {row['saved_bytes']} bytes, "
            f"val acc {_num(row['val_acc_before'])} -> {_num(row['val_acc_after'])}")

    measured = doc.get("memory_scaling") or {}
    # every mode in the file, also those added by this invocation
    in_file = sorted(store.keys() | set(config.grads), key=GRAD_ORDER.get)
    if memory_steps and (measured.get("max_iter") != list(memory_steps)
                         or not set(in_file) <= set(measured.get("ratio_last_to_first", {}))):
        log(f"[{config.task}] saved bytes at inner steps {list(memory_steps)}")
        rows = memory_scaling(problem, grads=in_file, max_iter=list(memory_steps),
                              backward_iter=config.backward_iter, seed=config.seed)
        doc["memory_scaling"] = {"max_iter": list(memory_steps), "backward_iter": config.backward_iter,
                                 "rows": rows, "ratio_last_to_first": _memory_ratios(rows, memory_steps)}
    if cosine_sweep and doc.get("cosine_vs_backward_iter", {}).get("backward_iters") != list(cosine_sweep):
        log(f"[{config.task}] cosine vs BPTT for K in {list(cosine_sweep)}")
        doc["cosine_vs_backward_iter"] = {
            "backward_iters": list(cosine_sweep),
            "rows": _cosine_sweep(problem, config, reference, cosine_sweep),
        }
    doc["wall_s_last_invocation"] = time.perf_counter() - t_start
    save()
    return store.document()


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


GRAD_ORDER = {"bptt": 0, "tbptt": 1, "rbp": 2, "cg": 3, "neumann": 4}


def _memory_ratios(rows: list[dict], steps: Sequence[int]) -> dict[str, float | None]:
    first, last = steps[0], steps[-1]
    out: dict[str, float | None] = {}
    for grad in dict.fromkeys(r["grad"] for r in rows):
        by_steps = {r["max_iter"]: r["saved_bytes"] for r in rows if r["grad"] == grad}
        a, b = by_steps.get(first), by_steps.get(last)
        out[grad] = (b / a) if a else None
    return out


def _cosine_sweep(problem: InnerProblem, config: ExperimentConfig, reference: list[float],
                  backward_iters: Sequence[int]) -> list[dict]:
    rows = []
    hyper = problem.hyperparameters()
    for k in backward_iters:
        row: dict[str, Any] = {"backward_iter": k}
        for grad in ("neumann", "tbptt"):
            hg = hypergradient(problem, hyper, grad=grad, max_iter=config.max_iter,
                               backward_iter=min(k, config.max_iter), seed=config.seed)
            row[f"{grad}_cosine_vs_bptt"] = cosine(hg.flat().cpu(), reference)
            row[f"{grad}_norm"] = float(hg.flat().norm())
        rows.append(row)
    return rows
