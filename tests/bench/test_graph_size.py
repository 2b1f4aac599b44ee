"""`pyg-rbp bench graph-size`: graph specs, the power-law generator, one configuration measured
in-process, a real memory-capped subprocess that runs out of memory, resume policy, the
largest-T bisection and the target verdicts."""

from __future__ import annotations

import json

import pytest
import torch

from pyg_rbp.bench.graph_size import (
    GraphSizeConfig,
    GraphSizeRun,
    is_out_of_memory,
    markdown_report,
    measure_configuration,
    parse_graph,
    parse_size,
    plot,
    predict_saved_bytes,
    run_configuration,
    verdicts,
)
from pyg_rbp.bench.graphs import powerlaw_graph


def test_parse_size_and_graph():
    assert parse_size("10k") == 10_000 and parse_size("2.4m") == 2_400_000 and parse_size("13") == 13
    spec = parse_graph("powerlaw:1m")
    assert (spec.kind, spec.num_nodes, spec.num_edges) == ("powerlaw", 10**6, 10**7)
    assert spec.name == "powerlaw-1m-10me"
    assert parse_graph("random:2449029:61859140").num_edges == 61_859_140
    assert parse_graph("powerlaw:100k", degree=5).num_edges == 500_000
    assert parse_graph("Coauthor-CS").name == "coauthor-cs" and not parse_graph("coauthor-cs").synthetic
    for bad in ("cora", "powerlaw", "powerlaw:1x", "powerlaw:1:2:3", "random:1", "powerlaw:0.5k1"):
        with pytest.raises(ValueError):
            parse_graph(bad)


def test_powerlaw_graph_exact_simple_and_heavy_tailed():
    g = powerlaw_graph(3000, 30000, num_features=8, seed=1)
    src, dst = g.edge_index
    assert g.num_edges == 30000 and g.info["num_edges_reached"] == 30000
    assert bool((src != dst).all())
    assert torch.unique(src * 3000 + dst).numel() == 30000  # no duplicates
    indeg = torch.bincount(dst, minlength=3000).double()
    assert indeg.max() > 20 * indeg.mean()  # hubs: a power-law tail, unlike a uniform graph
    same = powerlaw_graph(3000, 30000, num_features=8, seed=1)
    assert torch.equal(same.edge_index, g.edge_index) and torch.equal(same.x, g.x)
    assert not torch.equal(powerlaw_graph(3000, 30000, num_features=8, seed=2).edge_index, g.edge_index)
    with pytest.raises(ValueError, match="exponent"):
        powerlaw_graph(100, 100, exponent=2.0)
    with pytest.raises(ValueError, match="too dense"):
        powerlaw_graph(10, 40)


def _cfg(**kw) -> GraphSizeConfig:
    base = dict(graphs=["powerlaw:1500"], max_iter=8, backward_iter=3, hidden=16, repeats=1,
                memory_limit_gb=4.0)
    base.update(kw)
    return GraphSizeConfig(**base)


def test_measured_bytes_follow_the_modes_and_the_prediction_holds():
    cfg = _cfg()
    rows = {g: measure_configuration("powerlaw:1500", g, cfg) for g in ("probe", "bptt", "tbptt", "neumann")}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    b, t, n = (rows[g]["saved_bytes"] for g in ("bptt", "tbptt", "neumann"))
    assert n < t < b
    # The unrolled modes save base + per_step * recorded steps; the T=1/T=2 probe predicts them.
    probe = rows["probe"]["probe"]
    assert probe["per_step_bytes"] > 0 and "saved_bytes" not in rows["probe"]  # the probe trains nothing
    assert predict_saved_bytes(probe, "bptt", 8, 3) == probe["base_bytes"] + 8 * probe["per_step_bytes"]
    assert predict_saved_bytes(probe, "tbptt", 8, 3) == probe["base_bytes"] + 3 * probe["per_step_bytes"]
    assert predict_saved_bytes(probe, "neumann", 8, 3) is None
    for g in ("bptt", "tbptt"):
        assert predict_saved_bytes(probe, g, 8, 3) == pytest.approx(rows[g]["saved_bytes"], rel=0.05)
    # Neumann saves about one recorded step, whatever T: close to BPTT's T=1 bytes.
    assert n == pytest.approx(probe["saved_bytes_T1"], rel=0.25)
    assert rows["neumann"]["forward_iters"] == 8
    for g in ("bptt", "tbptt", "neumann"):
        r = rows[g]
        assert r["peak_rss_bytes"] > 0 and r["step_time_s"] > 0 and r["graph_info"]["num_nodes"] == 1500


def test_an_allocation_failure_is_caught_with_the_point_of_failure(monkeypatch):
    from pyg_rbp.nn import GatedCell

    real = GatedCell.step
    calls = {"n": 0}

    def failing(self, h, inputs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return real(self, h, inputs)

    monkeypatch.setattr(GatedCell, "step", failing)
    row = measure_configuration("powerlaw:500", "bptt", _cfg(predict=False))
    assert row["status"] == "out_of_memory" and row["failed_phase"] == "forward"
    assert row["failed_after_forward_steps"] == 6  # the 6th step raised
    assert row["saved_bytes_at_failure"] > 0 and "can't allocate" in row["error"]
    calls["n"] = -10**9  # no more failures; a non-memory error is an error
    monkeypatch.setattr(GatedCell, "step", lambda self, h, inputs: (_ for _ in ()).throw(ValueError("bad")))
    assert measure_configuration("powerlaw:500", "neumann", _cfg())["status"] == "error"


def test_is_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocator errors


def test_bptt_runs_out_of_memory_inside_its_capped_subprocess(tmp_path):
    # 20k nodes save ~29 MiB per BPTT step: 200 steps need ~6 GiB, far above a 1.5 GiB cap.
    cfg = GraphSizeConfig(graphs=["powerlaw:20k"], max_iter=200, backward_iter=5, repeats=1,
                          memory_limit_gb=1.5, predict=True, timeout_s=300)
    row = run_configuration(parse_graph("powerlaw:20k"), "bptt", cfg, scratch=tmp_path)
    assert row["status"] == "out_of_memory", row
    assert row["failed_phase"] == "forward" and 1 <= row["failed_after_forward_steps"] < 200
    assert row["process_peak_rss_bytes"] < cfg.memory_limit_bytes


def _fake_runner(calls: list, fits_up_to: int = 10**9):
    """A stand-in subprocess: BPTT fits up to `fits_up_to` steps, saved bytes linear in T."""

    def runner(spec, grad, cfg, max_iter=None):
        steps = cfg.max_iter if max_iter is None else max_iter
        calls.append((spec.name, grad, steps))
        n = spec.num_nodes or 1000
        info = {"num_nodes": n, "num_edges": 10 * n}
        base = {"graph": spec.name, "grad": grad, "max_iter": steps, "graph_info": info,
                "backward_iter": None if grad == "bptt" else cfg.backward_iter}
        per_step = 100 * n
        if grad == "probe":
            probe = {"saved_bytes_T1": 2 * per_step, "saved_bytes_T2": 3 * per_step,
                     "per_step_bytes": per_step, "base_bytes": per_step}
            return {**base, "status": "ok", "probe": probe}
        recorded = steps if grad == "bptt" else min(steps, cfg.backward_iter) if grad == "tbptt" else 1
        pred = {"predicted_saved_bytes": per_step * (recorded + 1)} if grad != "neumann" else {}
        if grad == "bptt" and steps > fits_up_to:
            # just above the boundary the backward runs out of memory; far above, the forward
            phase, after = ("backward", steps) if steps <= fits_up_to + 3 else ("forward", fits_up_to + 4)
            return {**base, **pred, "status": "out_of_memory", "failed_phase": phase,
                    "failed_after_forward_steps": after, "peak_rss_bytes": 2**30, "error": "x"}
        return {**base, **pred, "status": "ok", "saved_bytes": per_step * (recorded + 1),
                "peak_rss_bytes": per_step * (recorded + 3),
                "process_peak_rss_bytes": per_step * (recorded + 3),
                "step_time_s": 0.1, "step_times_s": [0.1]}

    return runner


def test_resume_skips_finished_refuses_other_settings_and_fresh_restarts(tmp_path):
    path = tmp_path / "gs.json"
    calls: list = []
    cfg = GraphSizeConfig(graphs=["powerlaw:1k"], grads=["bptt", "neumann"])
    GraphSizeRun(cfg, path, progress=False, log=lambda s: None, runner=_fake_runner(calls)).run()
    assert calls == [("powerlaw-1k-10ke", "probe", 100), ("powerlaw-1k-10ke", "bptt", 100),
                     ("powerlaw-1k-10ke", "neumann", 100)]  # the probe first, its own subprocess
    assert json.loads(path.read_text())["complete"]
    calls.clear()
    GraphSizeRun(cfg, path, progress=False, log=lambda s: None, runner=_fake_runner(calls)).run()
    assert calls == []  # same settings: nothing measured again
    more = GraphSizeConfig(graphs=["powerlaw:1k", "powerlaw:2k"], grads=["bptt", "neumann"], jobs=2)
    GraphSizeRun(more, path, progress=False, log=lambda s: None, runner=_fake_runner(calls)).run()
    assert sorted(calls) == [("powerlaw-2k-20ke", g, 100) for g in ("bptt", "neumann", "probe")]
    with pytest.raises(ValueError, match="other settings.*max_iter"):
        GraphSizeRun(GraphSizeConfig(graphs=["powerlaw:1k"], max_iter=50), path, runner=_fake_runner(calls))
    calls.clear()
    GraphSizeRun(GraphSizeConfig(graphs=["powerlaw:1k"], max_iter=50, grads=["neumann"]), path, fresh=True,
                 progress=False, log=lambda s: None, runner=_fake_runner(calls)).run()
    assert calls == [("powerlaw-1k-10ke", "neumann", 50)]
    # A crashed configuration is not finished: it is measured again.
    data = json.loads(path.read_text())
    data["results"][0]["status"] = "error"
    path.write_text(json.dumps(data))
    calls.clear()
    GraphSizeRun(GraphSizeConfig(graphs=["powerlaw:1k"], max_iter=50, grads=["neumann"]), path,
                 progress=False, log=lambda s: None, runner=_fake_runner(calls)).run()
    assert len(calls) == 1
    path.write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(ValueError, match="not a graph-size result"):
        GraphSizeRun(cfg, path, runner=_fake_runner(calls))


def test_skip_predicted_oom_runs_no_subprocess_for_a_predicted_failure(tmp_path):
    calls: list = []
    # fake probe: 100 bytes per node per step; 1m nodes x 101 recorded steps ~ 9.4 GiB > 1 GiB
    cfg = GraphSizeConfig(graphs=["powerlaw:1m"], grads=["bptt", "neumann"], memory_limit_gb=1.0,
                          skip_predicted_oom=True)
    result = GraphSizeRun(cfg, tmp_path / "gs.json", progress=False, log=lambda s: None,
                          runner=_fake_runner(calls)).run()
    assert [c[1] for c in calls] == ["probe", "neumann"]
    bptt = [r for r in result["results"] if r["grad"] == "bptt"][0]
    assert bptt["status"] == "skipped" and bptt["predicted_saved_bytes"] == 101 * 100 * 10**6


def test_largest_steps_bisection_finds_the_boundary(tmp_path):
    calls: list = []
    cfg = GraphSizeConfig(graphs=["powerlaw:1k"], grads=["bptt", "neumann"], max_iter=100)
    run = GraphSizeRun(cfg, tmp_path / "gs.json", largest_steps=["bptt"], progress=False,
                       log=lambda s: None, runner=_fake_runner(calls, fits_up_to=37))
    result = run.run()
    (ls,) = result["largest_steps"]
    assert ls["largest_steps"] == 37 and ls["first_failing_steps"] == 38 and ls["complete"]
    bptt_tries = [c for c in calls if c[1] == "bptt"]
    # T=100 once (reused), then bisection below the forward's failure step (41): log2(41) tries
    assert bptt_tries[0] == ("powerlaw-1k-10ke", "bptt", 100) and len(bptt_tries) <= 7
    assert all(t[2] < 41 for t in bptt_tries[1:])
    assert "Largest T for bptt" in markdown_report(result) and "**37**" in markdown_report(result)


def test_verdicts_use_measured_or_predicted_bptt_bytes(tmp_path):
    calls: list = []
    cfg = GraphSizeConfig(graphs=["powerlaw:1k", "powerlaw:1m"], grads=["bptt", "tbptt", "neumann"],
                          max_iter=100)
    # BPTT fits the 1k graph only (the fake bytes scale with nodes; T=100 fails on 1m).
    def runner(spec, grad, cfg, max_iter=None):
        fits = 10**9 if spec.num_nodes < 10**5 else 0
        return _fake_runner(calls, fits_up_to=fits)(spec, grad, cfg, max_iter)

    result = GraphSizeRun(cfg, tmp_path / "gs.json", progress=False, log=lambda s: None,
                          runner=runner).run()
    v = {x["target"].split(" (")[0]: x for x in result["targets"]}
    small = v["neumann/bptt saved bytes on powerlaw-1k-10ke"]
    assert small["how"] == "bptt measured" and small["value"] == pytest.approx(2 / 101)
    big = v["neumann/bptt saved bytes on powerlaw-1m-10me"]
    assert big["how"] == "bptt predicted" and big["value"] == pytest.approx(2 / 101) and big["pass"]
    fits = [x for x in result["targets"] if x["target"].startswith("neumann trains powerlaw-1m")]
    assert fits and fits[0]["pass"] is True
    cannot = [x for x in result["targets"] if x["target"].startswith("bptt cannot fit")]
    assert cannot[0]["pass"] is True
    # Reports render from the same result (table rows for every configuration, a PNG).
    md = markdown_report(result)
    assert md.count("| powerlaw-1m-10me |") == 3 and "out_of_memory" in md
    png = plot(result, tmp_path / "gs.png")
    assert png.stat().st_size > 1000
    assert verdicts(result) == result["targets"]


def test_config_and_cli_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="jobs"):
        GraphSizeConfig(jobs=3).validate()
    with pytest.raises(ValueError, match="unknown graph"):
        GraphSizeConfig(graphs=["cora"]).validate()
    with pytest.raises(ValueError, match="gradient modes"):
        GraphSizeConfig(grads=["nope"]).validate()
    from pyg_rbp.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "graph-size", "--graphs", "nope:1k", "--json", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        main(["bench", "graph-size", "--jobs", "3", "--json", str(tmp_path / "x.json")])
