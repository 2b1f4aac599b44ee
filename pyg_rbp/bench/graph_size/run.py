"""The ``bench graph-size`` driver: which configurations to run (probes first), resuming a saved
file, one subprocess per configuration (one or two at a time), the largest-``T`` bisection and
the result document written after every configuration.

Resuming follows the one policy of :class:`pyg_rbp.results.ResumableResults`: the settings are the
file's ``fingerprint``, a unit is one row of ``results`` (a configuration); a file of other
settings is refused unless ``fresh``. Rows that did not finish (``error``, ``timeout``,
``killed``) are not units of work done: they are measured again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pyg_rbp.bench.common import load_record
from pyg_rbp.bench.graph_size.config import (
    FINISHED,
    PROBE,
    RENAMED,
    SCHEMA,
    UNROLLED,
    GraphSizeConfig,
    upgrade,
)
from pyg_rbp.bench.graph_size.measure import NOTES, describe_row, predict_saved_bytes, run_configuration
from pyg_rbp.bench.graph_size.specs import GraphSpec, parse_graph
from pyg_rbp.bench.graph_size.targets import verdicts
from pyg_rbp.results import ResultsFileConflict, ResumableResults, environment, read_json


def _key(graph: str, grad: str, max_iter: int) -> str:
    return f"{graph}|{grad}|{max_iter}"


def _row_key(row: dict[str, Any]) -> str:
    return _key(row["graph"], row["grad"], row["max_iter"])


class GraphSizeRun:
    """The benchmark: every ``(graph, grad)`` configuration in its own subprocess, then the
    optional largest-``T`` bisections, then the target verdicts.

    ``run()`` measures what is missing, writes ``json_path`` after every configuration and
    returns the result. An existing file written with other settings raises
    :class:`~pyg_rbp.results.ResultsFileConflict`, a ``ValueError`` (pass ``fresh=True`` to
    discard it).
    """

    def __init__(self, cfg: GraphSizeConfig, json_path: str | os.PathLike | None = None, *,
                 largest_steps: Sequence[str] = (), largest_steps_graphs: Sequence[str] = (),
                 fresh: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print,
                 runner: Callable[..., dict[str, Any]] = run_configuration) -> None:
        cfg.validate()
        self.cfg = cfg
        self.json_path = Path(json_path) if json_path is not None else None
        self.largest_steps = list(largest_steps)
        bad = [g for g in self.largest_steps if g not in UNROLLED and g not in cfg.grads]
        if bad:
            raise ValueError(f"largest_steps modes {bad} are not measured here")
        self.largest_steps_graphs = [parse_graph(g, cfg.degree).name for g in largest_steps_graphs]
        self.progress, self.log, self.runner = progress, log, runner
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device cuda requested but torch.cuda.is_available() is False")
        self.rows: dict[str, dict[str, Any]] = {}
        self.tries: dict[str, dict[str, Any]] = {}
        self.loads: list[dict[str, Any]] = []
        if self.json_path is not None and self.json_path.is_file() and not fresh:
            self._check_schema(read_json(self.json_path))
        self.store = ResumableResults(self.json_path, cfg.fingerprint(), key=_row_key, fresh=fresh,
                                      settings_field="fingerprint", units_field="results",
                                      renamed=RENAMED)
        self._resume()
        self._lock = threading.Lock()
        self.started = time.time()

    def _check_schema(self, old: Any) -> None:
        schema = old.get("schema") if isinstance(old, dict) else None
        if schema != SCHEMA:
            raise ResultsFileConflict(
                f"{self.json_path} is not a graph-size result ({schema!r}); pass --fresh to "
                "overwrite it or choose another --json")

    def _resume(self) -> None:
        """The finished rows and bisection tries of the resumed file (none without one)."""
        finished = [s for s in FINISHED if s != "skipped" or self.cfg.skip_predicted_oom]
        old = upgrade({"results": self.store.units,  # a file of the older vocabulary too
                       "largest_steps": self.store.extra.get("largest_steps", [])})
        self.rows = {_row_key(r): r for r in old["results"] if r.get("status") in finished}
        self.tries = {_row_key(r): r for ls in old["largest_steps"]
                      for r in ls.get("tries", []) if r.get("status") in finished}
        self.loads = list(self.store.extra.get("machine_load", []))

    # -- output ---------------------------------------------------------------------------------

    def configurations(self) -> list[tuple[GraphSpec, str]]:
        """Every ``(graph, grad)`` to run; a graph's probe (unrolled modes) comes first."""
        probe = self.cfg.predict and any(g in UNROLLED for g in self.cfg.grads)
        return [(spec, grad) for spec in self.cfg.specs()
                for grad in ([PROBE] if probe else []) + list(self.cfg.grads)]

    def result(self, complete: bool) -> dict[str, Any]:
        order = {(s.name, g): i for i, (s, g) in enumerate(self.configurations())}
        rows = sorted(self.rows.values(),
                      key=lambda r: (order.get((r["graph"], r["grad"]), len(order)), r["max_iter"]))
        probes = {r["graph"]: r["probe"] for r in rows if r["grad"] == PROBE and r.get("probe")}
        for r in [*rows, *self.tries.values()]:
            predicted = predict_saved_bytes(probes.get(r["graph"]), r["grad"], r["max_iter"],
                                            self.cfg.backward_iter)
            if predicted is not None:
                r["predicted_saved_bytes"] = predicted
        out = {
            "schema": SCHEMA,
            "complete": complete,
            "fingerprint": self.cfg.fingerprint(),
            "config": asdict(self.cfg),
            "environment": environment(self.cfg.device),
            "machine_load": self.loads,
            "results": rows,
            "largest_steps": self._largest_summary(),
            "notes": NOTES,
        }
        out["targets"] = verdicts(out)
        return out

    def save(self, complete: bool = False) -> dict[str, Any]:
        with self._lock:
            result = self.result(complete)
            self.store.units = result["results"]
            self.store.extra = {k: v for k, v in result.items() if k not in ("fingerprint", "results")}
            self.store.write()
        return result

    # -- measuring ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.loads.append(load_record("start"))
        todo = [(s, g) for s, g in self.configurations()
                if _key(s.name, g, self.cfg.max_iter) not in self.rows]
        bar = tqdm(total=len(todo), desc="bench graph-size", unit="config", disable=not self.progress)

        def one(item: tuple[GraphSpec, str]) -> None:
            spec, grad = item
            row = self._skip_predicted(spec, grad, self.cfg.max_iter) or self.runner(spec, grad, self.cfg)
            with self._lock:
                self.rows[_key(spec.name, grad, self.cfg.max_iter)] = row
            self.save()
            self.log(f"[graph-size] {spec.name} {grad}: {describe_row(row)}")
            bar.update()

        # Probes first (the predictions, and --skip-predicted-oom, need them), then the modes.
        for batch in ([c for c in todo if c[1] == PROBE], [c for c in todo if c[1] != PROBE]):
            if self.cfg.jobs > 1:
                with ThreadPoolExecutor(self.cfg.jobs) as pool:
                    list(pool.map(one, batch))
            else:
                for item in batch:
                    one(item)
        bar.close()
        for grad in self.largest_steps:
            for spec in self.cfg.specs():
                if not self.largest_steps_graphs or spec.name in self.largest_steps_graphs:
                    self._bisect(spec, grad)
        self.loads.append(load_record("end", self.started))
        return self.save(complete=True)

    def _skip_predicted(self, spec: GraphSpec, grad: str, steps: int) -> dict[str, Any] | None:
        """A ``skipped`` row when ``skip_predicted_oom`` is set and the probe predicts that
        ``grad`` needs more than the limit on the CPU; else ``None`` (run it)."""
        cfg = self.cfg
        if not cfg.skip_predicted_oom or grad not in UNROLLED or not cfg.device.startswith("cpu"):
            return None
        probe_row = self.rows.get(_key(spec.name, PROBE, cfg.max_iter)) or {}
        predicted = predict_saved_bytes(probe_row.get("probe"), grad, steps, cfg.backward_iter)
        graph_bytes = probe_row.get("peak_rss_graph_bytes") or 0
        if predicted is None or predicted + graph_bytes <= cfg.memory_limit_bytes:
            return None
        return {"graph": spec.name, "grad": grad, "max_iter": steps,
                "backward_iter": None if grad == "bptt" else cfg.backward_iter, "device": cfg.device,
                "graph_info": probe_row.get("graph_info"), "status": "skipped",
                "reason": f"predicted saved bytes plus the graph exceed the "
                          f"{cfg.memory_limit_gb:g} GiB limit"}

    def _try(self, spec: GraphSpec, grad: str, steps: int) -> dict[str, Any]:
        key = _key(spec.name, grad, steps)
        if key not in self.tries:
            if key in self.rows:
                self.tries[key] = self.rows[key]
            else:
                row = (self._skip_predicted(spec, grad, steps)
                       or self.runner(spec, grad, self.cfg, max_iter=steps))
                with self._lock:
                    self.tries[key] = row
                self.save()
                self.log(f"[graph-size] largest T of {grad} on {spec.name}: T={steps} {describe_row(row)}")
        return self.tries[key]

    def _bisect(self, spec: GraphSpec, grad: str) -> None:
        """Largest ``T`` in ``[1, cfg.max_iter]`` at which ``grad`` trains within the limit."""
        top = self._try(spec, grad, self.cfg.max_iter)
        if top.get("status") == "ok":
            return
        lo, hi = 0, self.cfg.max_iter  # ok at lo (0: none yet), fails at hi
        # A forward that ran out of memory at step s fails for every T >= s (the first s steps
        # are the same computation whatever T): start the search below s.
        if top.get("failed_phase") == "forward" and top.get("failed_after_forward_steps"):
            hi = max(1, min(hi, int(top["failed_after_forward_steps"])))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._try(spec, grad, mid).get("status") == "ok":
                lo = mid
            else:
                hi = mid

    def _largest_summary(self) -> list[dict[str, Any]]:
        out = []
        for grad in self.largest_steps:
            for spec in self.cfg.specs():
                if self.largest_steps_graphs and spec.name not in self.largest_steps_graphs:
                    continue
                tries = sorted((r for r in self.tries.values()
                                if r["graph"] == spec.name and r["grad"] == grad),
                               key=lambda r: r["max_iter"])
                if not tries:
                    continue
                ok = [r["max_iter"] for r in tries if r.get("status") == "ok"]
                bad = [r["max_iter"] for r in tries if r.get("status") != "ok"]
                # a forward that failed at step s shows that T = s fails too
                bad += [int(r["failed_after_forward_steps"]) for r in tries
                        if r.get("failed_phase") == "forward" and r.get("failed_after_forward_steps")]
                largest = max(ok) if ok else 0
                done = largest == self.cfg.max_iter or (bool(bad) and min(bad) == largest + 1)
                out.append({"graph": spec.name, "grad": grad, "largest_steps": largest,
                            "first_failing_steps": min(bad) if bad else None,
                            "at_least": largest == self.cfg.max_iter, "complete": done,
                            "searched_up_to": self.cfg.max_iter, "tries": tries})
        return out
