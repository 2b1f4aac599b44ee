"""Forward solvers (iteration, Anderson, Broyden), the GMRES and phantom gradient modes, the
registries and the contractivity tools, against independent references (float64)."""

from __future__ import annotations

import warnings

import pytest
import torch

import pyg_rbp
from pyg_rbp import fixed_point
from pyg_rbp.engine import (
    ConvergenceError,
    ConvergenceWarning,
    DivergenceError,
    GradMode,
    get_grad_mode,
    grad_mode_names,
    jacobian_penalty,
    neumann_solve,
    register_grad_mode,
    register_solver,
    solver_names,
    unregister_grad_mode,
    unregister_solver,
)
from pyg_rbp.engine.forward import SolveResult
from pyg_rbp.profiling import SavedTensorBytes

DT = torch.float64
SOLVERS = ("iteration", "anderson", "broyden")


def contraction(n: int = 9, cols: int = 2, rho: float = 0.9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=DT)
    W = (rho * W / torch.linalg.matrix_norm(W, 2)).requires_grad_(True)
    U = torch.randn(n, 3, generator=g, dtype=DT, requires_grad=True)
    x = torch.randn(3, cols, generator=g, dtype=DT, requires_grad=True)

    def f(h):
        return torch.tanh(W @ h + U @ x)

    return f, (W, U, x)


def expansive_affine(n: int = 10, seed: int = 0):
    """h = A h + b with spectral radius of A in (1, 2): plain iteration diverges, I - A is
    nonsingular, the fixed point is unique."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    eig = torch.linspace(-0.8, 1.6, n, dtype=DT)
    eig[eig.abs() < 0.95].mul_(1.0)  # keep 1 away from the spectrum: |1 - lambda| >= 0.05
    eig = torch.where((eig - 1).abs() < 0.1, eig + 0.2, eig)
    A = (Q @ torch.diag(eig) @ Q.T).requires_grad_(True)
    b = torch.randn(n, 2, generator=g, dtype=DT, requires_grad=True)
    return A, b


def loss_fn(h):
    return (h ** 2).sum() + h.sin().sum()


def dense_gradient(f, params, h_star):
    """Independent reference: dense J at h*, z = (I - J^T)^{-1} g, then (df/dtheta)^T z."""
    hs = h_star.detach()
    J = torch.autograd.functional.jacobian(lambda v: f(v.view_as(hs)).reshape(-1), hs.reshape(-1))
    hl = hs.clone().requires_grad_(True)
    g = torch.autograd.grad(loss_fn(hl), hl)[0].reshape(-1)
    z = torch.linalg.solve(torch.eye(J.shape[0], dtype=DT) - J.T, g)
    hr = hs.clone()
    out = f(hr)
    return torch.autograd.grad(out, params, z.view_as(out))


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# --- forward solvers ---------------------------------------------------------------------------

@pytest.mark.parametrize("solver", SOLVERS)
def test_each_solver_reaches_the_fixed_point_of_a_contraction(solver):
    f, _ = contraction()
    h, stats = fixed_point(f, torch.zeros(9, 2, dtype=DT), solver=solver, max_iter=2000,
                           tol=1e-12, return_stats=True, grad="neumann")
    with torch.no_grad():
        res = float((f(h) - h).norm() / h.norm())
    assert res < 1e-10
    assert stats.solver == solver and stats.converged
    assert 1 <= stats.forward_iters <= 2000


def test_anderson_and_broyden_beat_plain_iteration_on_a_slow_contraction():
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=DT))
    A = Q @ torch.diag(torch.linspace(-0.5, 0.99, 20, dtype=DT)) @ Q.T
    b = torch.randn(20, 2, generator=g, dtype=DT)
    iters = {}
    for s in SOLVERS:
        _, st = fixed_point(lambda h: A @ h + b, torch.zeros(20, 2, dtype=DT), solver=s,
                            max_iter=5000, tol=1e-10, return_stats=True)
        iters[s] = st.forward_iters
    assert iters["anderson"] < iters["iteration"] / 3
    assert iters["broyden"] < iters["iteration"] / 3


@pytest.mark.parametrize("solver,options", [("anderson", dict(m=30)), ("broyden", dict(m=40))])
def test_accelerated_solvers_solve_an_expansive_affine_map(solver, options):
    A, b = expansive_affine()
    rho = float(torch.linalg.eigvals(A.detach()).abs().max())
    assert 1 < rho < 2
    exact = torch.linalg.solve(torch.eye(10, dtype=DT) - A.detach(), b.detach())
    with torch.no_grad():
        h = fixed_point(lambda h: A @ h + b, torch.zeros(10, 2, dtype=DT), solver=solver,
                        solver_options=options, max_iter=300, tol=1e-12)
    assert rel(h, exact) < 1e-9
    # plain iteration diverges on the same map
    with pytest.raises((DivergenceError, ConvergenceError)):
        with torch.no_grad():
            fixed_point(lambda h: A @ h + b, torch.zeros(10, 2, dtype=DT), max_iter=5000,
                        tol=1e-12, strict=True)


def test_solver_options_are_checked():
    f, _ = contraction()
    with pytest.raises(ValueError, match="not understood"):
        fixed_point(f, torch.zeros(9, 2, dtype=DT), solver="anderson", solver_options={"window": 3})
    with pytest.raises(ValueError, match="unknown solver 'andersen'"):
        fixed_point(f, torch.zeros(9, 2, dtype=DT), solver="andersen")
    with pytest.raises(ValueError, match="beta"):
        fixed_point(f, torch.zeros(9, 2, dtype=DT), solver="anderson", solver_options={"beta": 2.0})


def test_tuple_state_with_anderson():
    f, _ = contraction()
    h_single = fixed_point(f, torch.zeros(9, 2, dtype=DT), solver="anderson", max_iter=200,
                           tol=1e-12, grad="bptt" if False else "neumann")
    pair = fixed_point(lambda s: (f(s[0]), 0.5 * s[1] + 1.0),
                       (torch.zeros(9, 2, dtype=DT), torch.zeros(3, dtype=DT)),
                       solver="anderson", max_iter=200, tol=1e-12)
    assert rel(pair[0], h_single) < 1e-9
    assert rel(pair[1], torch.full((3,), 2.0, dtype=DT)) < 1e-9


# --- gradients with accelerated forwards ---------------------------------------------------

@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("mode", ["gmres", "neumann", "cg"])
def test_implicit_gradients_with_every_solver_match_the_dense_solve(solver, mode):
    f, params = contraction(rho=0.6)
    h = fixed_point(f, torch.zeros(9, 2, dtype=DT), solver=solver, grad=mode, max_iter=500,
                    tol=1e-13, backward_iter=200)
    grads = torch.autograd.grad(loss_fn(h), params)
    ref = dense_gradient(f, params, h)
    for a, b in zip(grads, ref):
        assert rel(a, b) < 1e-8


def test_gmres_matches_the_dense_solve_where_neumann_diverges():
    A, b = expansive_affine()

    def f(h):
        return A @ h + b

    h = fixed_point(f, torch.zeros(10, 2, dtype=DT), solver="anderson",
                    solver_options={"m": 30}, grad="gmres", max_iter=300, tol=1e-13,
                    backward_iter=40)
    grads = torch.autograd.grad(loss_fn(h), (A, b))
    ref = dense_gradient(f, (A, b), h)
    for a, r in zip(grads, ref):
        assert rel(a, r) < 1e-8
    # Neumann on the same system blows up
    h = fixed_point(f, torch.zeros(10, 2, dtype=DT), solver="anderson", solver_options={"m": 30},
                    grad="neumann", max_iter=300, tol=1e-13, backward_iter=2000)
    with pytest.raises(DivergenceError):
        torch.autograd.grad(loss_fn(h), (A, b))


def test_gmres_with_restarts_and_backward_tol():
    f, params = contraction(rho=0.9, n=20, seed=3)
    ref = None
    vjps = {}
    for restart, btol in [(50, 0.0), (5, 0.0), (50, 1e-6)]:
        h, st = fixed_point(f, torch.zeros(20, 2, dtype=DT), grad="gmres", max_iter=600,
                            tol=1e-13, backward_iter=50, backward_tol=btol,
                            grad_options={"restart": restart}, return_stats=True)
        grads = torch.autograd.grad(loss_fn(h), params)
        if ref is None:
            ref = dense_gradient(f, params, h)
        err = max(rel(a, r) for a, r in zip(grads, ref))
        vjps[(restart, btol)] = st.backward_vjps
        assert st.backward_iters == st.backward_vjps
        assert err < (1e-5 if btol else 1e-8 if restart == 50 else 1e-4), (restart, btol, err)
        assert st.backward_residual < (1e-5 if btol else 1e-4)
    assert vjps[(50, 0.0)] == 50 and vjps[(50, 1e-6)] < 50


def test_gmres_needs_fewer_vjps_than_neumann_for_the_same_accuracy():
    g = torch.Generator().manual_seed(4)
    Q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=DT))
    A = (Q @ torch.diag(torch.linspace(-0.5, 0.97, 30, dtype=DT)) @ Q.T).requires_grad_(True)
    b = torch.randn(30, 2, generator=g, dtype=DT, requires_grad=True)
    params = (A, b)

    def f(h):
        return A @ h + b

    h0 = torch.zeros(30, 2, dtype=DT)
    spent = {}
    for mode in ("gmres", "neumann"):
        h, st = fixed_point(f, h0, grad=mode, max_iter=2000, tol=1e-13, backward_iter=2000,
                            backward_tol=1e-8, return_stats=True)
        torch.autograd.grad(loss_fn(h), params)
        spent[mode] = st.backward_vjps
    assert spent["gmres"] < 0.5 * spent["neumann"]


def test_phantom_equals_its_definition_written_out():
    f, params = contraction(rho=0.8)
    K, lam = 7, 0.6
    h = fixed_point(f, torch.zeros(9, 2, dtype=DT), grad="phantom", max_iter=300, tol=1e-12,
                    backward_iter=K, grad_options={"damping": lam})
    grads = torch.autograd.grad(loss_fn(h), params)
    # by hand: solve without a graph, then K damped steps from the detached solution
    with torch.no_grad():
        hs = torch.zeros(9, 2, dtype=DT)
        for _ in range(300):
            new = f(hs)
            done = float((new - hs).norm() / hs.norm().clamp_min(1e-30)) <= 1e-12
            hs = new
            if done:
                break
    z = hs.clone()
    for _ in range(K):
        z = (1 - lam) * z + lam * f(z)
    ref = torch.autograd.grad(loss_fn(z), params)
    assert rel(h, z) < 1e-12
    for a, b in zip(grads, ref):
        assert rel(a, b) < 1e-12


def test_bptt_refuses_an_accelerated_solver_and_tbptt_steps_from_the_solution():
    f, params = contraction(rho=0.7)
    with pytest.raises(ValueError, match="bptt"):
        fixed_point(f, torch.zeros(9, 2, dtype=DT), grad="bptt", solver="anderson")
    K = 4
    h = fixed_point(f, torch.zeros(9, 2, dtype=DT), grad="tbptt", solver="anderson",
                    max_iter=200, tol=1e-12, backward_iter=K)
    grads = torch.autograd.grad(loss_fn(h), params)
    with torch.no_grad():
        hs = fixed_point(f, torch.zeros(9, 2, dtype=DT), solver="anderson", max_iter=200,
                         tol=1e-12)
    z = hs.clone()
    for _ in range(K):
        z = f(z)
    ref = torch.autograd.grad(loss_fn(z), params)
    for a, b in zip(grads, ref):
        assert rel(a, b) < 1e-12


@pytest.mark.parametrize("solver", ["anderson", "broyden"])
def test_memory_of_implicit_modes_with_accelerated_solvers_is_independent_of_T(solver):
    f, _ = contraction(rho=0.9, n=40, cols=8)
    saved = []
    for T in (10, 200):
        with SavedTensorBytes() as m:
            fixed_point(f, torch.zeros(40, 8, dtype=DT), solver=solver, grad="gmres", max_iter=T)
        saved.append(m.bytes)
    assert saved[0] == saved[1] > 0


def test_stats_count_function_evaluations_and_vjps():
    f, params = contraction(rho=0.6)
    h, st = fixed_point(f, torch.zeros(9, 2, dtype=DT), solver="anderson", grad="gmres",
                        max_iter=7, backward_iter=6, return_stats=True)
    assert st.forward_iters == 7 and len(st.residual_trace) == 7
    torch.autograd.grad(loss_fn(h), params)
    assert st.backward_vjps == 6 and st.backward_residual is not None
    d = st.as_dict()
    assert d["solver"] == "anderson" and d["backward_vjps"] == 6


# --- registries -----------------------------------------------------------------------------

def test_registered_solver_and_mode_run_through_fixed_point_conv():
    from pyg_rbp.nn import FixedPointConv, PPRCell

    calls = {"solver": 0, "adjoint": 0}

    def halfway(step, h0, *, max_iter, tol, residual, trace, relax=0.5):
        """Damped iteration written as a user would, to check the calling convention."""
        calls["solver"] += 1
        h = h0
        prev = h0
        n = 0
        while n < max_iter - 1:
            prev, out = h, step(h)
            n += 1
            h = tuple((1 - relax) * a + relax * b for a, b in zip(h, out))
            if tol > 0 and bool(residual(out, prev) <= tol):
                break
        out = step(h)
        return SolveResult(out, h, n + 1, residual(out, h))

    def dense_adjoint(lin, g, iters, tol):
        calls["adjoint"] += 1
        z, k = neumann_solve(lin, g, iters, tol)
        return z, k

    register_solver("test_halfway", halfway)
    register_grad_mode("test_series", dense_adjoint)
    try:
        assert "test_halfway" in solver_names() and "test_series" in grad_mode_names()
        assert get_grad_mode("test-series").implicit
        torch.manual_seed(0)
        x = torch.randn(6, 3, dtype=DT, requires_grad=True)
        ei = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
        conv = FixedPointConv(PPRCell(alpha=0.3), grad="test_series", solver="test_halfway",
                              max_iter=400, tol=1e-12, backward_iter=200)
        out = conv(x, ei)
        (gx,) = torch.autograd.grad(loss_fn(out), x)
        ref_conv = FixedPointConv(PPRCell(alpha=0.3), grad="neumann", max_iter=400, tol=1e-12,
                                  backward_iter=200)
        ref = ref_conv(x, ei)
        (gref,) = torch.autograd.grad(loss_fn(ref), x)
        assert calls == {"solver": 1, "adjoint": 1}
        assert conv.stats.solver == "test_halfway" and conv.stats.grad == "test_series"
        assert rel(out, ref) < 1e-10 and rel(gx, gref) < 1e-8
        with pytest.raises(ValueError, match="already registered"):
            register_solver("test_halfway", halfway)
    finally:
        unregister_solver("test_halfway")
        unregister_grad_mode("test_series")
    assert "test_series" not in grad_mode_names()
    with pytest.raises(ValueError, match="built in"):
        unregister_grad_mode("neumann")


def test_grad_mode_objects_say_what_they_record():
    assert [get_grad_mode(m).records for m in pyg_rbp.GRAD_MODES] == [
        "all", "last", "one", "one", "one"]
    assert get_grad_mode("gmres").implicit and get_grad_mode("phantom").records == "from_solution"
    with pytest.raises(ValueError, match="needs an adjoint"):
        GradMode("x", "one")
    with pytest.raises(ValueError, match="not understood"):
        fixed_point(lambda h: 0.5 * h, torch.ones(2, dtype=DT), grad="gmres",
                    grad_options={"restrat": 3})


# --- contractivity ------------------------------------------------------------------------

def test_jacobian_penalty_is_hutchinson_and_differentiable():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 5, generator=g, dtype=DT, requires_grad=True)
    h = torch.randn(5, 3, generator=g, dtype=DT)
    f = lambda s: torch.tanh(W @ s)  # noqa: E731
    # exact ||J||_F^2 / size, with its gradient
    def exact(Wm):
        J = torch.autograd.functional.jacobian(lambda v: torch.tanh(Wm @ v.view(5, 3)).reshape(-1),
                                               h.reshape(-1), create_graph=True)
        return J.pow(2).sum() / h.numel()
    est = jacobian_penalty(f, h, num_samples=4000, generator=torch.Generator().manual_seed(1))
    ref = exact(W)
    assert abs(float(est) - float(ref)) < 0.05 * float(ref)
    (g_est,) = torch.autograd.grad(est, W)
    (g_ref,) = torch.autograd.grad(ref, W)
    assert rel(g_est, g_ref) < 0.1
    # one probe: exactly ||J^T eps||^2 / size for the generator's eps
    gen = torch.Generator().manual_seed(2)
    one = jacobian_penalty(f, h, generator=gen)
    eps = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=DT)
    hd = h.clone().requires_grad_(True)
    (jt,) = torch.autograd.grad(f(hd), hd, eps)
    assert abs(float(one) - float(jt.pow(2).sum() / 15)) < 1e-12


def test_spectral_radius_monitor_in_stats():
    W = torch.diag(torch.tensor([0.7, -0.3, 0.2], dtype=DT)).requires_grad_(True)
    _, st = fixed_point(lambda h: W @ h + 1.0, torch.zeros(3, 2, dtype=DT), max_iter=100,
                        spectral_radius_iters=60, return_stats=True)
    assert abs(st.spectral_radius - 0.7) < 1e-3
    _, st = fixed_point(lambda h: W @ h + 1.0, torch.zeros(3, 2, dtype=DT), return_stats=True)
    assert st.spectral_radius is None


# --- argument checks, strictness, segments (issues 15 and 19) -------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(backward_tol=-1e-3), "backward_tol"),
    (dict(backward_tol=float("nan")), "backward_tol"),
    (dict(max_iter="10"), "max_iter"),
    (dict(max_iter=2.5), "max_iter"),
    (dict(tol="1e-3"), "tol must be a number"),
    (dict(tol=None), "tol must be a number"),
    (dict(tol=float("inf")), "tol"),
    (dict(damping="0.5"), "damping must be a number"),
    (dict(damping=0.0), "damping"),
    (dict(backward_iter=None), "backward_iter"),
    (dict(grad="phantom", grad_options={"damping": 1.5}), "damping"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fixed_point(lambda h: 0.5 * h, torch.ones(2, dtype=DT), **kwargs)


def test_strict_raises_where_a_warning_would_be_shown():
    f, _ = contraction(rho=0.99)
    with pytest.raises(ConvergenceError, match="missed tol"):
        fixed_point(f, torch.zeros(9, 2, dtype=DT), max_iter=3, tol=1e-12, strict=True)
    with pytest.raises(ConvergenceError, match="did not settle"):
        fixed_point(lambda h: -h + 1.0, torch.zeros(3, dtype=DT), max_iter=10, strict=True)
    fixed_point(f, torch.zeros(9, 2, dtype=DT), max_iter=2000, tol=1e-8, strict=True)  # fine


def test_warnings_are_per_key_not_per_process():
    f, _ = contraction(rho=0.99)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for key in ("layer-a", "layer-b", "layer-a"):
            fixed_point(f, torch.zeros(9, 2, dtype=DT), max_iter=3, tol=1e-12, warn_key=key)
    assert sum(issubclass(w.category, ConvergenceWarning) for w in caught) == 2


@pytest.mark.parametrize("solver", SOLVERS)
def test_segments_stop_on_the_worst_segment(solver):
    """A batch of two independent problems stops only when each is solved to tol, so a
    problem's solution does not depend on what shares its batch."""
    big, _ = contraction(n=40, cols=1, rho=0.3, seed=5)   # converges fast, large norm
    small, _ = contraction(n=4, cols=1, rho=0.97, seed=6)  # converges slowly

    def both(h):
        return torch.cat([big(h[:40]), 0.01 * small(h[40:] / 0.01)])

    seg = torch.cat([torch.zeros(40, dtype=torch.long), torch.ones(4, dtype=torch.long)])
    h0 = torch.zeros(44, 1, dtype=DT)
    tol = 1e-6
    with torch.no_grad():
        alone = fixed_point(lambda h: 0.01 * small(h / 0.01), torch.zeros(4, 1, dtype=DT),
                            solver=solver, max_iter=5000, tol=tol)
        exact = fixed_point(lambda h: 0.01 * small(h / 0.01), torch.zeros(4, 1, dtype=DT),
                            max_iter=20000, tol=1e-14)
        per_seg, st = fixed_point(both, h0, solver=solver, max_iter=5000, tol=tol, segments=seg,
                                  return_stats=True)
        glob = fixed_point(both, h0, solver=solver, max_iter=5000, tol=tol)
    err_alone = rel(alone, exact)
    assert st.residual <= tol
    # each problem is solved to its tolerance, batched or alone
    assert rel(per_seg[40:], exact) < 50 * tol and err_alone < 50 * tol
    if solver == "iteration":  # the same steps as alone, a few more at most
        assert rel(per_seg[40:], exact) <= 1.5 * err_alone + 1e-12
        # the global residual hides the small problem behind the big one
        assert rel(glob[40:], exact) > 10 * err_alone
    with pytest.raises(ValueError, match="segments"):
        fixed_point(both, h0, segments=seg[:10])


# --- the CLI takes solvers and modes from the registries ---------------------------------------

def test_train_cli_takes_a_solver_and_registered_modes(tmp_path, capsys):
    import json

    from pyg_rbp.cli import main
    from pyg_rbp.training.config import build_config

    default = build_config("karate", "node", model="gated", grad="neumann")
    assert default.solver == "iteration" and "--solver" not in default.command()
    accel = build_config("karate", "node", model="gated", grad="gmres", solver="Anderson")
    assert accel.solver == "anderson" and "--solver anderson" in accel.command()
    with pytest.raises(ValueError, match="unknown solver"):
        build_config("karate", "node", model="gated", grad="neumann", solver="newton")

    register_grad_mode("test_cli_series", neumann_solve)
    try:
        out = tmp_path / "r.json"
        assert main(["train", "--dataset", "karate", "--model", "gated", "--epochs", "2",
                     "--max-iter", "5", "--solver", "anderson", "--grad", "gmres,test_cli_series",
                     "--json", str(out), "--no-progress"]) == 0
    finally:
        unregister_grad_mode("test_cli_series")
    doc = json.loads(out.read_text())
    assert sorted(r["grad"] for r in doc["results"]) == ["gmres", "test_cli_series"]
    assert all(r["fixed_point"]["solver"] == "anderson" for r in doc["results"])
    assert doc["config"]["solver"] == "anderson"
