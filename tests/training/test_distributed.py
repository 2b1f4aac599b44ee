"""Several processes (torch.distributed, gloo on CPU): same parameters as one process, no hangs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import node_problem

from pyg_rbp.training.config import build_config
from pyg_rbp.training.distributed import WorkerFailed, gather_rows, spawn, train_and_save

REPO = Path(__file__).resolve().parents[2]
_problem = node_problem


def _cfg(model: str = "implicit", step_every: str = "batch", loader: str = "history"):
    # cluster: 12 spectral parts of the 90 nodes, 2 per batch -> 6 batches, as history's 6
    sizes = {"batch_size": 20} if loader == "history" else {"batch_size": 15, "num_parts": 12}
    return build_config("karate", "node", model=model, loader=loader, epochs=3, dropout=0.0,
                        max_iter=60, tol=1e-10, backward_iter=20, eval_every=1, patience=0,
                        step_every=step_every, **sizes)


@pytest.mark.parametrize("step_every,loader", [("batch", "history"), ("epoch", "history"),
                                               ("batch", "cluster")])
def test_two_ranks_match_one_process_on_the_same_global_batches(tmp_path, step_every, loader):
    loaded, data = _problem()
    cfg = _cfg("implicit", step_every, loader)
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    train_and_save(cfg, loaded, data, 0, str(one), dtype=torch.float64, accumulate=2)
    spawn(train_and_save, 2, (cfg, loaded, data, 0, str(two), "cpu", torch.float64))
    a, b = torch.load(one, weights_only=False), torch.load(two, weights_only=False)
    assert a["result"]["batches"] == b["result"]["batches"] == 6  # 3 rounds of 2 batches per epoch
    assert b["result"]["world_size"] == 2 and a["result"]["world_size"] == 1
    for k, v in a["state"].items():
        assert v.dtype == torch.float64
        torch.testing.assert_close(b["state"][k], v, rtol=1e-6, atol=1e-6, msg=k)
    # the parameters moved: the comparison is not between two initial states
    torch.manual_seed(0)
    from pyg_rbp.runtime import set_seed
    from pyg_rbp.training.models import build_node_model

    set_seed(0)
    init = build_node_model(cfg, 6, 3).double().state_dict()
    assert any(not torch.allclose(init[k], v) for k, v in a["state"].items())
    assert a["result"]["val"] == pytest.approx(b["result"]["val"])


def _gather_worker(out_dir: str) -> None:
    import torch.distributed as dist

    rank = dist.get_rank()
    rows = [(torch.tensor([rank, 10 + rank]), torch.full((2, 3), float(rank)))]
    if rank == 1:
        rows.append((torch.tensor([20]), torch.full((1, 3), 7.0)))
    got = gather_rows(rows)
    torch.save(got, os.path.join(out_dir, f"rank{rank}.pt"))


def test_gather_rows_gives_every_rank_every_row(tmp_path):
    spawn(_gather_worker, 2, (str(tmp_path),))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert [ids.tolist() for ids, _ in got] == [[0, 10], [1, 11, 20]]
        assert got[1][1][:, 0].tolist() == [1.0, 1.0, 7.0]


def _dying_worker() -> None:
    import torch.distributed as dist

    if dist.get_rank() == 1:
        os._exit(3)
    gather_rows([(torch.tensor([0]), torch.zeros(1, 2))])  # would wait for rank 1 forever
    time.sleep(60)


def test_a_dead_rank_ends_the_job_with_a_clear_error():
    t0 = time.monotonic()
    with pytest.raises(WorkerFailed, match="rank 1 of 2 died \\(exit code 3\\)"):
        spawn(_dying_worker, 2)
    assert time.monotonic() - t0 < 45


def test_cli_world_size_spawns_and_only_rank_0_writes(tmp_path):
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pyg_rbp.cli", "train", "--dataset", "karate", "--model", "implicit",
           "--loader", "history", "--batch-size", "8", "--epochs", "3", "--world-size", "2",
           "--threads", "1", "--no-progress", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| karate |") == 1  # one table: rank 0's
    doc = json.loads(out.read_text())
    (res,) = doc["results"]
    assert res["world_size"] == 2 and res["loader"] == "history" and res["nodes_per_s"] > 0
    assert res["batches"] % 2 == 0 and res["epochs_run"] == 3
    # A resumed run: rank 0 skips the finished seed 0, and so must rank 1 (it has no file to read).
    proc = subprocess.run([*cmd, "--seeds", "0-1"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc2 = json.loads(out.read_text())
    assert [r["seed"] for r in doc2["results"]] == [0, 1]
    assert doc2["results"][0] == res  # kept, not retrained


def _agree_worker(out_dir: str) -> None:
    import torch.distributed as dist

    from pyg_rbp.engine import DivergenceError
    from pyg_rbp.training.distributed import agree_on_divergence

    rank = dist.get_rank()
    seen = []
    for step in range(3):
        try:
            with agree_on_divergence():
                if rank == 1 and step == 1:
                    raise DivergenceError("the training loss became nan at epoch 7")
            seen.append([step, None])
        except DivergenceError as err:
            seen.append([step, str(err)])
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(seen))


def test_agree_on_divergence_gives_every_rank_the_first_diverged_ranks_error(tmp_path):
    spawn(_agree_worker, 2, (str(tmp_path),))
    expected = [[0, None], [1, "rank 1 of 2: the training loss became nan at epoch 7"], [2, None]]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected


def _nan_on_rank1_worker(args, out_dir: str, nan_at: int) -> None:
    """``pyg-rbp train --world-size 2``'s worker, with rank 1's training loss made NaN at its
    ``nan_at``-th training batch; every rank's result is written to ``rank<r>.json``."""
    import torch.distributed as dist

    from pyg_rbp.cli import train as cli_train
    from pyg_rbp.training import node

    rank = dist.get_rank()
    real_loss, real_batched = node.loss_fn, node.train_node_batched
    calls = [0]

    def loss_fn(metric, out, y):
        loss = real_loss(metric, out, y)
        if rank == 1 and out.requires_grad:
            calls[0] += 1
            if calls[0] == nan_at:
                return loss * float("nan")
        return loss

    def train_node_batched(*a, **kw):
        result = real_batched(*a, **kw)
        keep = {k: result[k] for k in ("diverged", "epochs_run", "best_epoch", "val", "test")}
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(keep))
        return result

    node.loss_fn, node.train_node_batched = loss_fn, train_node_batched
    cli_train._distributed_worker(args)


def test_a_nan_on_one_rank_stops_every_rank_in_the_same_step(tmp_path, monkeypatch):
    from pyg_rbp.cli import build_parser

    monkeypatch.setenv("PYG_RBP_DIST_TIMEOUT", "300")  # a rank left waiting would take this long
    out = tmp_path / "r.json"
    args = build_parser().parse_args([
        "train", "--dataset", "karate", "--model", "implicit", "--loader", "history",
        "--batch-size", "8", "--epochs", "6", "--world-size", "2", "--threads", "1",
        "--no-progress", "--json", str(out)])
    t0 = time.monotonic()
    spawn(_nan_on_rank1_worker, 2, (args, str(tmp_path), 3))
    assert time.monotonic() - t0 < 120  # promptly: far under the collective timeout
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == rank1  # same decision, same step, same record, same selected model
    diverged = rank0["diverged"]
    assert diverged is not None and diverged["epoch"] >= 2 and rank0["epochs_run"] == diverged["epoch"] - 1
    assert diverged["error"].startswith("rank 1 of 2: the training loss became nan at epoch")
    (res,) = json.loads(out.read_text())["results"]  # rank 0's results file
    assert res["diverged"] == diverged and res["epochs_run"] == rank0["epochs_run"]
