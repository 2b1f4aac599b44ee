"""The one resume policy (:class:`pyg_rbp.results.ResumableResults`)."""

import json

import pytest

from pyg_rbp.results import CorruptResultsError, ResultsFileConflict, ResumableResults


def _store(path, **kw):
    kw.setdefault("key", lambda u: u["seed"])
    return ResumableResults(path, {"dataset": "cora", "lr": 0.01, "seeds": [0, 1]},
                            varying=("seeds",), **kw)


def test_units_are_kept_written_atomically_and_skipped_on_rerun(tmp_path):
    path = tmp_path / "r.json"
    store = _store(path)
    assert not store.done(0) and store.units == []
    store.add({"seed": 0, "test": 0.8}, summary="one")
    on_disk = json.loads(path.read_text())
    assert on_disk == {"settings": {"dataset": "cora", "lr": 0.01, "seeds": [0, 1]},
                       "summary": "one", "units": [{"seed": 0, "test": 0.8}]}
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary left beside it
    again = _store(path)
    assert again.done(0) and not again.done(1) and again.get(0) == {"seed": 0, "test": 0.8}
    assert again.extra == {"summary": "one"}
    again.add({"seed": 0, "test": 0.9})  # same key replaces, never duplicates
    assert [u["test"] for u in _store(path).units] == [0.9]


def test_other_settings_are_refused_unless_fresh(tmp_path):
    path = tmp_path / "r.json"
    _store(path).add({"seed": 0})
    other = ResumableResults(path, {"dataset": "cora", "lr": 0.01, "seeds": [5]},
                             key=lambda u: u["seed"], varying=("seeds",))
    assert other.done(0)  # seeds may vary between runs
    with pytest.raises(ResultsFileConflict, match="differ in: lr"):
        ResumableResults(path, {"dataset": "cora", "lr": 0.1}, key=lambda u: u["seed"])
    fresh = ResumableResults(path, {"dataset": "cora", "lr": 0.1}, key=lambda u: u["seed"], fresh=True)
    assert fresh.units == []
    fresh.write()
    assert json.loads(path.read_text())["units"] == []


def test_a_setting_the_file_predates_counts_at_its_default(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"settings": {"dataset": "cora"}, "units": [{"seed": 3}]}))
    store = ResumableResults(path, {"dataset": "cora", "lr": 0.01}, key=lambda u: u["seed"],
                             defaults={"lr": 0.01})
    assert store.done(3)
    with pytest.raises(ResultsFileConflict, match="lr"):
        ResumableResults(path, {"dataset": "cora", "lr": 0.01}, key=lambda u: u["seed"])


def test_a_corrupt_file_names_itself_and_memory_only_needs_no_path(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{not json")
    with pytest.raises(CorruptResultsError, match="r.json"):
        _store(path)
    path.write_text("[1, 2]")
    with pytest.raises(CorruptResultsError, match="not a results file"):
        _store(path)
    mem = _store(None)
    mem.add({"seed": 1})
    assert mem.done(1) and mem.document()["units"] == [{"seed": 1}]
