"""Shared test fixtures: real datasets for the tests that need them, and generated tiny ones.

A test that needs a real dataset says which (``@pytest.mark.datasets("cora", "mnist")``) and asks
for ``data_root`` (a writable session root) or ``shared_datasets`` (a root to read in place). The
dataset's raw files come from the offline mirror (``$PYG_RBP_SHARED``, else ``../shared/datasets``)
or the configured data root, else are downloaded when a network is reachable, else the test is
skipped, and the run ends with one summary line naming the datasets and how to provide them.
Under CI (``CI=true`` or ``PYG_RBP_REQUIRE_DATA=1``, which ``.ci/run`` sets) a missing dataset
fails the test instead, so CI runs every real-data test. Only ``raw`` files travel: a mirror's
``processed/`` is never copied (see the security note in pyg_rbp.data.safe_load).

Shared fixtures live here (``one_thread``, the data roots, the generated datasets) and, for the
layer contract tests, in ``tests/nn/conftest.py``; test modules do not define their own copies.
pytest imports test files in ``importlib`` mode (pyproject.toml), so files in different folders
may share a basename without ``__init__.py`` files. A test module is not importable by another
under its collected name: ``tests/`` is on ``sys.path`` (``pythonpath``) so that ``from conftest
import <helper>`` works, which loads a second, separate copy of the module; import plain helper
functions that way, never state that fixtures share.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from pyg_rbp.data.loaded import LoadedDataset

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYG_RBP_SHARED") or REPO.parent / "shared" / "datasets")
REQUIRE_ENV = "PYG_RBP_REQUIRE_DATA"
_CONFIGURED_ROOT = os.environ.get("PYG_RBP_DATA", "").strip()
_DOWNLOAD = os.environ.get("PYG_RBP_DOWNLOAD", "").strip().lower()  # as the run began (fixtures change it)
_MISSING: dict[str, str] = {}  # dataset name -> why it could not be provided
_SKIPPED: list[str] = []  # node ids of the tests skipped for want of data


@pytest.fixture(autouse=True)
def _fresh_convergence_warnings():
    """Each test sees the engine's once-per-process warnings afresh."""
    from pyg_rbp.engine import reset_warnings

    reset_warnings()
    yield


def data_required() -> bool:
    """Whether a missing real dataset fails the test (CI) instead of skipping it."""
    flags = (os.environ.get("CI", ""), os.environ.get(REQUIRE_ENV, ""))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "datasets(*names): the real datasets (manifest names) the test reads through data_root"
    )


_NETWORK: list[bool] = []


def network_available(host: str = "github.com", port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host`` answers within ``timeout`` (DNS included); off when PYG_RBP_DOWNLOAD=0."""
    if _DOWNLOAD in {"0", "false", "no", "off"}:
        return False
    if not _NETWORK:
        result: list[bool] = []

        def probe() -> None:
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                result.append(True)
            except OSError:
                result.append(False)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout + 2.0)
        _NETWORK.append(bool(result and result[0]))
    return _NETWORK[0]


def _wanted_files(entry):
    """The files a test of ``entry`` needs (the offline MNIST copy holds only the test split)."""
    if entry.name == "mnist":
        return tuple(f for f in entry.files if Path(f.path).name.startswith("t10k-"))
    return entry.files


def _copy_raw(source: Path, target: Path) -> None:
    """Copy a dataset folder without its ``processed/`` files, writable."""
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("processed"))
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def provide_dataset(name: str, root: Path) -> str | None:
    """Put dataset ``name``'s raw files under ``root``; None on success, else why not."""
    from pyg_rbp.data.errors import DataUnavailableError
    from pyg_rbp.data.manifest import entry as manifest_entry
    from pyg_rbp.data.manifest import missing_files
    from pyg_rbp.data.storage import configured_root, prepare_dataset_folder

    entry = manifest_entry(name)
    wanted = _wanted_files(entry)
    if not missing_files(entry, root / entry.folder, wanted):
        return None
    persistent = configured_root(_CONFIGURED_ROOT or None)
    for source in (SHARED, persistent):
        if source.is_dir() and not missing_files(entry, source / entry.folder, wanted):
            _copy_raw(source / entry.folder, root / entry.folder)
            return None
    if not network_available():
        return f"not in {SHARED} nor {persistent}, and no network to download it"
    try:
        base = prepare_dataset_folder(entry, persistent, download=True, files=wanted)
    except DataUnavailableError as err:
        return f"download failed: {str(err).splitlines()[0]}"
    _copy_raw(base / entry.folder, root / entry.folder)
    return None


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test, restored after it.

    Small problems on a shared, busy CPU stall in OpenMP with more; and kernels on one thread give
    the same numbers as single-threaded worker processes. A test module takes it for all its tests
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def _session_data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pyg_rbp_data")


@pytest.fixture(scope="session")
def real_data(_session_data_root):
    """``real_data(*names) -> root``: a writable root holding those datasets, else skip (fail in CI)."""

    return lambda *names: require_datasets(names, _session_data_root)


def require_datasets(names, root: Path) -> Path:
    """Provide ``names`` under ``root`` (see :func:`provide_dataset`); skip the test, or fail it
    under CI, naming each dataset that could not be provided."""
    missing = {}
    for name in names:
        why = _MISSING.get(name) or provide_dataset(name, root)
        if why:
            missing[name] = _MISSING[name] = why
    if missing:
        message = "real dataset(s) unavailable: " + "; ".join(f"{n}: {w}" for n, w in missing.items())
        if data_required():
            pytest.fail(message + " (required under CI / PYG_RBP_REQUIRE_DATA)")
        pytest.skip(message)
    return root


def _marked_datasets(request) -> tuple[str, ...]:
    marker = request.node.get_closest_marker("datasets")
    return tuple(marker.args) if marker else ()


def _require_mirror() -> None:
    """Skip (fail under CI) a test that needs the whole offline mirror when there is none."""
    if not SHARED.is_dir():
        message = (f"real dataset(s) unavailable: the offline mirror {SHARED} is absent "
                   "(mark the test with @pytest.mark.datasets(...) to download what it needs)")
        _MISSING.setdefault("offline mirror", f"{SHARED} absent")
        if data_required():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def data_root(request, real_data) -> Path:
    """A writable data root holding the datasets of the test's ``datasets`` marker.

    An unmarked test gets the raw files of the whole offline mirror (and is skipped, or fails
    under CI, without one)."""
    names = _marked_datasets(request)
    if names:
        return real_data(*names)
    root = real_data()
    _require_mirror()
    marker = root / ".whole-mirror"
    if not marker.exists():
        for child in SHARED.iterdir():
            if child.is_dir():
                _copy_raw(child, root / child.name)
        marker.touch()
    return root


@pytest.fixture
def shared_datasets(request, real_data) -> Path:
    """A root to read the test's marked datasets from: the offline mirror itself when it holds
    them (read-only, read in place), else the session root they were provided in."""
    from pyg_rbp.data.manifest import entry, missing_files

    names = _marked_datasets(request)
    if not names:
        _require_mirror()
    if SHARED.is_dir() and all(
        not missing_files(entry(n), SHARED / entry(n).folder, _wanted_files(entry(n))) for n in names
    ):
        return SHARED
    return real_data(*names)


_SKIP_REASON = "real datasets unavailable (which, and how to provide them: the 'pyg_rbp:' line above)"


def pytest_runtest_logreport(report):
    """Fold every for-want-of-data skip into one ``-ra`` line (the count stays exact)."""
    if report.skipped and isinstance(report.longrepr, tuple) and "real dataset(s) unavailable" in str(
        report.longrepr[2]
    ):
        _SKIPPED.append(report.nodeid)
        report.longrepr = (str(Path(__file__)), 0, _SKIP_REASON)


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED:
        why = sorted(set(_MISSING.values()))
        terminalreporter.write_line(
            f"pyg_rbp: {len(_SKIPPED)} test(s) skipped for want of real datasets "
            f"{', '.join(sorted(_MISSING))} ({'; '.join(why)}): put their raw files in a mirror and "
            "set PYG_RBP_SHARED=<dir> (default ../shared/datasets; layout and sources in "
            "pyg_rbp/data/manifest.json), or run with network access. "
            "CI=true or PYG_RBP_REQUIRE_DATA=1 makes them fail.",
            yellow=True,
        )


@pytest.fixture(scope="session", autouse=True)
def _data_cache_in_tmp(tmp_path_factory):
    """Read-only roots are copied into ``$PYG_RBP_CACHE``: keep that inside pytest's tmp dir."""
    if os.environ.get("PYG_RBP_CACHE"):
        yield
        return
    os.environ["PYG_RBP_CACHE"] = str(tmp_path_factory.mktemp("pyg_rbp_cache"))
    yield
    os.environ.pop("PYG_RBP_CACHE", None)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No downloads, no local mirrors, a private cache, and a stdin that fails if read.

    Loaders under this fixture see only the root they are given, so missing files must
    surface as ``DataUnavailableError`` (and any OGB prompt would fail loudly, not hang).
    """
    import builtins

    def no_stdin(*args, **kwargs):
        raise AssertionError(f"a loader tried to read stdin: {args}")

    monkeypatch.setenv("PYG_RBP_DOWNLOAD", "0")
    monkeypatch.setenv("PYG_RBP_SHARED", "")
    monkeypatch.setenv("PYG_RBP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PYG_RBP_DATA", raising=False)
    monkeypatch.setattr(builtins, "input", no_stdin)
    return tmp_path / "cache"


def write_tiny_planetoid(raw_dir: Path, prefix: str = "pubmed", seed: int = 0) -> dict:
    """Write a small Planetoid dataset in the ``ind.<prefix>.*`` pickle layout.

    600 nodes (30 in ``x``/``y``, 540 in ``allx``/``ally``, 60 test nodes in ``tx``/``ty`` at
    shuffled indices 540..599), 20 features, 3 classes, a random undirected graph. PyG's
    public split needs 500 validation nodes after ``y``, hence the size. Returns the ground
    truth (features, labels in PyG's node order, edges) for the tests to compare against.
    """
    import pickle
    from collections import defaultdict

    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n_all, n_allx, n_y, n_feat, n_cls = 600, 540, 30, 20, 3
    features = (rng.random((n_all, n_feat)) < 0.2).astype(np.float32)
    labels = rng.integers(0, n_cls, n_all)
    onehot = np.eye(n_cls, dtype=np.int64)[labels]
    test_index = rng.permutation(np.arange(n_allx, n_all))
    # row k of tx/ty is the node test_index[k] (PyG reorders by the sorted index)
    tx, ty = features[test_index], onehot[test_index]
    graph = defaultdict(list)
    edges = set()
    for i in range(n_all):
        for j in rng.choice(n_all, size=2, replace=False):
            if i != int(j):
                edges.add((min(i, int(j)), max(i, int(j))))
    for i, j in sorted(edges):
        graph[i].append(j)
        graph[j].append(i)
    raw_dir.mkdir(parents=True, exist_ok=True)
    items = {
        "x": sp.csr_matrix(features[:n_y]),
        "y": onehot[:n_y],
        "allx": sp.csr_matrix(features[:n_allx]),
        "ally": onehot[:n_allx],
        "tx": sp.csr_matrix(tx),
        "ty": ty,
        "graph": graph,
    }
    for name, obj in items.items():
        with open(raw_dir / f"ind.{prefix}.{name}", "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    (raw_dir / f"ind.{prefix}.test.index").write_text("".join(f"{i}\n" for i in test_index))
    return {
        "num_nodes": n_all,
        "num_features": n_feat,
        "num_classes": n_cls,
        "x": features,
        "y": labels,
        "num_undirected_edges": len(edges),
    }


def write_tiny_ogbn(folder: Path, split_name: str = "time", seed: int = 0) -> dict:
    """Write a small node dataset in OGB's ``ogbn-arxiv`` release layout under ``folder``.

    50 nodes, 8 features, labels in 0..4, 120 directed edges, a 30/10/10 split, the node-year
    file arxiv has, and ``RELEASE_v1.txt``. Returns the ground truth.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n, n_feat, n_edges = 50, 8, 120
    edges = rng.integers(0, n, size=(n_edges, 2))
    feats = rng.standard_normal((n, n_feat)).astype(np.float32)
    labels = rng.integers(0, 5, size=(n, 1))
    order = rng.permutation(n)
    split = {"train": np.sort(order[:30]), "valid": np.sort(order[30:40]), "test": np.sort(order[40:])}
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    def write(path: Path, values) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(values).to_csv(path, header=False, index=False, compression="gzip")

    write(raw / "edge.csv.gz", edges)
    write(raw / "node-feat.csv.gz", feats)
    write(raw / "node-label.csv.gz", labels)
    write(raw / "node_year.csv.gz", rng.integers(1990, 2020, size=(n, 1)))
    write(raw / "num-node-list.csv.gz", np.array([n]))
    write(raw / "num-edge-list.csv.gz", np.array([n_edges]))
    for part, idx in split.items():
        write(folder / "split" / split_name / f"{part}.csv.gz", idx)
    (folder / "RELEASE_v1.txt").write_text("# Release note for tiny test data\n")
    return {
        "num_nodes": n,
        "num_features": n_feat,
        "x": feats,
        "y": labels[:, 0],
        "split": split,
        "edges": edges,
    }


@pytest.fixture
def tiny_pubmed_root(tmp_path) -> tuple[Path, dict]:
    """A data root holding a generated PubMed-layout dataset: (root, ground truth)."""
    root = tmp_path / "tiny_root"
    truth = write_tiny_planetoid(root / "Planetoid" / "PubMed" / "raw", "pubmed")
    return root, truth


@pytest.fixture
def tiny_arxiv_root(tmp_path) -> tuple[Path, dict]:
    """A data root holding a generated ogbn-arxiv-layout dataset: (root, ground truth)."""
    root = tmp_path / "tiny_root"
    truth = write_tiny_ogbn(root / "ogb" / "ogbn_arxiv")
    return root, truth


def node_problem(n: int = 90, classes: int = 3, seed: int = 0) -> tuple[LoadedDataset, Data]:
    """A small random node-classification graph with train/val/test masks (multi-process and
    mini-batch tests)."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, 4 * n), generator=g)
    ei = to_undirected(ei[:, ei[0] != ei[1]], num_nodes=n)
    y = torch.arange(n) % classes
    x = torch.randn(n, 6, generator=g) + torch.nn.functional.one_hot(y, 6).float()
    order = torch.randperm(n, generator=g)
    masks = torch.zeros(3, n, dtype=torch.bool)
    masks[0, order[:30]] = True
    masks[1, order[30:50]] = True
    masks[2, order[50:]] = True
    data = Data(x=x, edge_index=ei, y=y, train_mask=masks[0], val_mask=masks[1], test_mask=masks[2])
    loaded = LoadedDataset(name="karate", task="node", metric="acc", num_features=6, num_classes=classes,
                           data=data)
    return loaded, data
