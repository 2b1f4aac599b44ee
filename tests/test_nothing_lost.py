"""Nothing lost, nothing silent: outputs checked before any training, divergence recorded in every
form it takes, no orphaned leaderboard worker, one trainer per cell, unique temporary names, and
bad command-line values refused with one line and exit status 2."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pyg_rbp.cli import main
from pyg_rbp.results import OutputPathError, atomic_write_json, check_output_file, check_output_folder

REPO = Path(__file__).resolve().parents[1]
KARATE = ["train", "--dataset", "karate", "--epochs", "1", "--max-iter", "2", "--no-progress"]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything starts training or loading data."""
    from pyg_rbp.training import leaderboard, runner

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the outputs were checked")

    monkeypatch.setattr(runner, "run_seeds", refuse)
    monkeypatch.setattr(runner, "load_dataset", refuse)
    monkeypatch.setattr(leaderboard, "run", refuse)


@pytest.fixture
def read_only_dir(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def _bad_outputs(tmp_path: Path, read_only: Path) -> dict[str, tuple[Path, str]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {
        "read-only folder": (read_only / "out.json", "is read-only"),
        "missing folder under a read-only one": (read_only / "sub" / "out.json", "is read-only"),
        "directory": (tmp_path, "is a directory"),
        "/dev/full": (Path("/dev/full"), "not a regular file"),
        "fifo": (fifo, "not a regular file"),
    }


def test_train_refuses_unwritable_json_before_training(tmp_path, read_only_dir, no_training, capsys):
    for case, (path, why) in _bad_outputs(tmp_path, read_only_dir).items():
        with pytest.raises(SystemExit) as info:
            main([*KARATE, "--json", str(path)])
        assert info.value.code == 2, case
        assert why in str(info.value) and str(path) in str(info.value), case
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, case
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # not replaced by a file (as root it could be)


def test_every_command_checks_its_outputs_first(tmp_path, read_only_dir, no_training):
    target = str(read_only_dir / "x")
    cases = [
        ["leaderboard", "--datasets", "karate", "--seeds", "1", "--results", target,
         "--board", str(tmp_path / "b.md"), "--no-progress"],
        ["leaderboard", "--datasets", "karate", "--seeds", "1", "--results", str(tmp_path / "r"),
         "--board", str(read_only_dir / "b.md"), "--no-progress"],
        ["hopfield", "--png", str(tmp_path), "--epochs", "1"],
        ["hopfield", "--json", str(tmp_path / "h.json"), "--md", "/dev/full", "--epochs", "1"],
        ["hyperopt", "--json", target, "--meta-steps", "1"],
        ["hyperopt", "--png", "/dev/full", "--meta-steps", "1"],
        ["demo", "--json", "/dev/full", "--epochs", "1"],
        ["demo", "--json", target, "--epochs", "1"],
    ]
    for argv in cases:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
        assert f"pyg-rbp {argv[0]}:" in str(info.value), argv


def test_output_checks_and_atomic_writes_never_replace_special_files(tmp_path, read_only_dir):
    deeper = tmp_path / "new" / "deeper" / "out.json"
    assert check_output_file(deeper) == deeper
    assert check_output_folder(tmp_path / "results") == tmp_path / "results"
    with pytest.raises(OutputPathError, match="exists and is not a folder"):
        check_output_folder(Path("/dev/full"))
    with pytest.raises(OutputPathError, match="is read-only"):
        check_output_folder(read_only_dir / "results")
    ro_file = tmp_path / "ro.json"
    ro_file.write_text("{}")
    ro_file.chmod(0o444)
    with pytest.raises(OutputPathError, match="the file is read-only"):
        check_output_file(ro_file)
    with pytest.raises(OutputPathError, match="not a regular file"):
        atomic_write_json("/dev/full", {"a": 1})
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.parametrize("flag,value,message", [
    ("--lr", "nan", "finite"), ("--lr", "inf", "finite"), ("--lr", "0", "(0, inf)"),
    ("--weight-decay", "nan", "finite"), ("--weight-decay", "-1", "[0, inf)"),
    ("--tol", "inf", "finite"), ("--tol", "nan", "finite"),
    ("--momentum", "1", "[0, 1)"), ("--momentum", "-0.5", "[0, 1)"), ("--momentum", "nan", "finite"),
    ("--kappa", "1", "(0, 1)"), ("--kappa", "0", "(0, 1)"), ("--kappa", "1.5", "(0, 1)"),
    ("--device", "gpu", "unknown device 'gpu'"), ("--device", "cuda:x", "unknown device"),
])
def test_bad_values_are_one_line_and_status_2(flag, value, message, no_training, capsys):
    with pytest.raises(SystemExit) as info:
        main([*KARATE, flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and flag in err and "Traceback" not in err


def test_library_config_refuses_nonfinite_and_out_of_range_values():
    from pyg_rbp.training.config import build_config

    for field, value, match in [("lr", float("nan"), "lr must be a finite"),
                                ("weight_decay", float("inf"), "weight_decay must be a finite"),
                                ("tol", float("nan"), "tol must be a finite"),
                                ("momentum", 1.0, r"momentum must be in \[0, 1\)"),
                                ("kappa", 1.0, r"kappa must be in \(0, 1\)")]:
        with pytest.raises(ValueError, match=match):
            build_config("karate", "node", model="gated", grad="neumann", **{field: value})


def test_corrupt_json_is_one_line_and_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"config": {"dataset": "karate"},\n  "results": [')
    with pytest.raises(SystemExit) as info:
        main([*KARATE, "--json", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad} is not valid JSON (line 2" in err and "--fresh" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert bad.read_text().endswith('"results": [')  # left as it was


def test_divergence_forms_are_recognised():
    from pyg_rbp.engine import DivergenceError
    from pyg_rbp.training.objective import divergence_of

    assert isinstance(divergence_of(ValueError("fixed_point: h0 contains NaN or inf")), DivergenceError)
    assert isinstance(divergence_of(ValueError("fixed_point: h0[1] contains NaN or inf")), DivergenceError)
    assert divergence_of(ValueError("hidden must be an integer >= 1")) is None  # a real error
    err = DivergenceError("state")
    assert divergence_of(err) is err


@pytest.mark.datasets("cora")
def test_ppr_blown_up_by_sgd_is_recorded_as_diverged_and_resumes(data_root, tmp_path, capsys):
    out = tmp_path / "ppr.json"
    argv = ["train", "--dataset", "cora", "--root", str(data_root), "--model", "ppr", "--optimizer", "sgd",
            "--lr", "1e5", "--seeds", "0-1", "--epochs", "10", "--json", str(out), "--no-progress"]
    with pytest.warns(RuntimeWarning, match="diverged"):
        assert main(argv) == 0
    doc = json.loads(out.read_text())
    diverged = {r["seed"]: r["diverged"] for r in doc["results"]}
    assert sorted(diverged) == [0, 1] and all(diverged.values())
    assert any("h0 contains NaN or inf" in d["error"] for d in diverged.values())  # seed 1's form
    assert doc["summary"][0]["diverged"] == {str(s): d["epoch"] for s, d in diverged.items()}
    assert "seed 0 at" in capsys.readouterr().out
    assert main(argv) == 0  # the rerun keeps both recorded runs instead of aborting again
    assert json.loads(out.read_text())["results"] == doc["results"]


def test_a_cell_held_by_another_run_is_not_trained_twice(tmp_path, monkeypatch):
    from pyg_rbp.results import try_lock
    from pyg_rbp.training import leaderboard as lb
    from pyg_rbp.training import runner
    from pyg_rbp.training.config import build_config

    trained: list[int] = []

    def fake_run_one(cfg, loaded, seed, **kwargs):
        trained.append(seed)
        return {"seed": seed, "val": 0.5, "test": 0.5}

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    entry = lb.Entry(build_config("karate", "node", model="gcn", epochs=1), [0, 1])
    cells = tmp_path / "results" / "cells"
    lock = entry.cell_path(cells, 0).with_name(entry.cell_path(cells, 0).name + ".lock")
    with try_lock(lock) as held:  # another leaderboard is training seed 0 right now
        assert held
        with try_lock(lock) as again:
            assert not again  # a second claim fails at once
        counts = lb.run([entry], tmp_path / "results", progress=False, log=lambda m: None)
    assert trained == [1] and counts == {"run": 1, "skipped": 1, "unavailable": 0}
    assert not entry.cell_path(cells, 0).exists() and entry.cell_path(cells, 1).is_file()
    assert not lock.exists()  # released and removed
    assert lb.run([entry], tmp_path / "results", progress=False, log=lambda m: None)["run"] == 1
    assert trained == [1, 0]


def test_concurrent_png_writes_use_unique_temporary_names(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from pyg_rbp.results import atomic_save_figure

    seen: list[str] = []
    both = threading.Barrier(2, timeout=10)
    original = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        seen.append(getattr(fname, "name", str(fname)))
        both.wait()  # both writers are mid-write at once
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    target = tmp_path / "leaderboard.png"
    threads = [threading.Thread(target=atomic_save_figure, args=(plt.figure(), target)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(seen) == 2 and seen[0] != seen[1]
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.png"]


_LEADERBOARD = """
import sys
from pyg_rbp.training import leaderboard as lb
from pyg_rbp.training.config import build_config
entry = lb.Entry(build_config("karate", "node", model="gcn", epochs=10**7, eval_every=10**6), [0, 1])
try:
    lb.run([entry], sys.argv[1], jobs=2, threads=1, progress=False)
except lb.Terminated as err:
    sys.exit(128 + err.signum)
"""


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and b"spawn_main" in cmd:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_a_parallel_leaderboard_leaves_no_worker(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _LEADERBOARD, str(tmp_path / "results")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.2)
            workers = _children(proc.pid)
        assert len(workers) == 2, "the two workers did not start"
        time.sleep(0.5)  # (killed while still starting, a worker exits as it initialises)
        proc.send_signal(sig)
        code = proc.wait(30)
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM)
        deadline = time.monotonic() + 60  # generous: a loaded 2-core CI machine
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), f"orphaned workers {workers}"
    finally:  # never leave our own processes behind, whatever failed
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


@pytest.mark.datasets("cora")
def test_a_blown_up_mini_batch_run_is_recorded_as_diverged(data_root, tmp_path):
    """The mini-batch loop records divergence in every form the full-graph loop does."""
    out = tmp_path / "ppr_history.json"
    argv = ["train", "--dataset", "cora", "--root", str(data_root), "--model", "ppr", "--optimizer", "sgd",
            "--lr", "1e5", "--seeds", "0", "--epochs", "6", "--loader", "history", "--batch-size", "1024",
            "--json", str(out), "--no-progress"]
    with pytest.warns(RuntimeWarning, match="diverged"):
        assert main(argv) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["diverged"]
