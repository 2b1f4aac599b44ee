"""Helpers every benchmark driver needs in the same form: machine-load context for timings,
the JSON round trip that makes settings comparable with a saved file, and the markdown + PNG
pair written next to a result's JSON.

They live here, not in one benchmark, so that ``bench scaling``, ``bench graph-size`` and
``bench solvers`` record and report these things identically.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyg_rbp.results import atomic_write_text


def machine_load() -> dict[str, Any]:
    """1/5/15-minute load averages and the ``uptime`` line (context for the timings)."""
    info: dict[str, Any] = {}
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        info["loadavg"] = None
    try:
        info["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True,
                                        timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # pragma: no cover
        info["uptime"] = None
    return info


def load_record(when: str, started: float | None = None) -> dict[str, Any]:
    """One ``machine_load`` entry of a result: ``when`` (``start``/``end``), the UTC time, the
    seconds since ``started`` (a ``time.time()``, given at the end) and :func:`machine_load`."""
    record: dict[str, Any] = {"when": when,
                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if started is not None:
        record["elapsed_s"] = time.time() - started
    return {**record, **machine_load()}


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists), to compare with a saved file."""
    return json.loads(json.dumps(obj))


def write_markdown_and_png(result: dict[str, Any], json_path: str | os.PathLike,
                           markdown: Callable[[dict[str, Any]], str],
                           plot: Callable[[dict[str, Any], Path], Path]) -> tuple[Path, Path]:
    """``markdown(result)`` and ``plot(result, path)`` next to the JSON (same stem, ``.md`` and
    ``.png``), both written atomically."""
    json_path = Path(json_path)
    md = atomic_write_text(json_path.with_suffix(".md"), markdown(result))
    png = plot(result, json_path.with_suffix(".png"))
    return md, png
