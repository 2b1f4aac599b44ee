"""Loading one dataset from several processes at once: they take turns (PyG writes `processed/`
in place), while other datasets and other roots go on."""

from __future__ import annotations

import threading
import time

from pyg_rbp.data import registry
from pyg_rbp.data.storage import dataset_lock


def _try_lock(name, root, out):
    t0 = time.perf_counter()
    with dataset_lock(name, root):
        out.append(time.perf_counter() - t0)


def test_the_same_dataset_and_root_waits_for_the_holder(tmp_path):
    waited: list[float] = []
    with dataset_lock("cora", tmp_path):
        other = threading.Thread(target=_try_lock, args=("CORA", tmp_path, waited))
        other.start()
        other.join(0.3)
        assert other.is_alive() and not waited  # blocked while the lock is held
    other.join(5)
    assert len(waited) == 1 and waited[0] >= 0.3


def test_other_datasets_and_roots_do_not_wait(tmp_path):
    done: list[float] = []
    with dataset_lock("cora", tmp_path):
        for args in (("citeseer", tmp_path, done), ("cora", tmp_path / "elsewhere", done)):
            t = threading.Thread(target=_try_lock, args=args)
            t.start()
            t.join(5)
            assert not t.is_alive()
    assert len(done) == 2


def test_load_holds_the_lock_while_the_loader_runs(tmp_path, monkeypatch):
    seen: list[bool] = []

    def loader(entry, root, download):
        probe: list[float] = []
        t = threading.Thread(target=_try_lock, args=(entry.name, root, probe))
        t.start()
        t.join(0.2)
        seen.append(t.is_alive())  # another loader of the same dataset has to wait
        return "loaded"

    monkeypatch.setitem(registry._ON_DISK, "planetoid", loader)
    assert registry.load("cora", root=tmp_path) == "loaded"
    assert seen == [True]
