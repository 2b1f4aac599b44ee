"""The fixed-point engine against independent references (float64 where exactness is claimed)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import pyg_rbp
from pyg_rbp import GRAD_MODES, ConvergenceWarning, DivergenceError, fixed_point
from pyg_rbp.profiling import SavedTensorBytes

DT = torch.float64


def contractive_problem(n: int = 7, d_in: int = 3, cols: int = 2, rho: float = 0.6, seed: int = 0):
    """tanh(W h + U x) with ||W||_2 = rho < 1, so the map is a contraction."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=DT)
    W = (rho * W / torch.linalg.matrix_norm(W, 2)).requires_grad_(True)
    U = torch.randn(n, d_in, generator=g, dtype=DT, requires_grad=True)
    x = torch.randn(d_in, cols, generator=g, dtype=DT, requires_grad=True)
    target = torch.randn(n, cols, generator=g, dtype=DT)

    def f(h):
        return torch.tanh(W @ h + U @ x)

    return f, W, U, x, target


def loss_fn(h, target):
    return ((h - target) ** 2).sum() + h.sin().sum()


def exact_implicit_gradient(f, W, U, x, target, h0):
    """Independent reference: converge h*, then solve (I - J^T) z = g densely."""
    with torch.no_grad():
        h = h0.clone()
        for _ in range(2000):
            h = f(h)
    hs = h.clone().requires_grad_(True)
    out = f(hs)
    J = torch.autograd.functional.jacobian(lambda v: f(v.view_as(hs)).reshape(-1), hs.detach().reshape(-1))
    hl = h.clone().requires_grad_(True)
    g = torch.autograd.grad(loss_fn(hl, target), hl)[0].reshape(-1)
    z = torch.linalg.solve(torch.eye(J.shape[0], dtype=DT) - J.T, g)
    return torch.autograd.grad(out, [W, U, x], z.view_as(out))


@pytest.mark.parametrize(
    "mode,kwargs",
    [
        ("neumann", dict(max_iter=300, backward_iter=300)),
        ("cg", dict(max_iter=300, backward_iter=60)),
        ("rbp", dict(max_iter=300, backward_iter=300)),
        ("bptt", dict(max_iter=300)),
        ("tbptt", dict(max_iter=300, backward_iter=300)),
    ],
)
def test_every_mode_matches_exact_implicit_gradient(mode, kwargs):
    f, W, U, x, target = contractive_problem()
    h0 = torch.zeros(7, 2, dtype=DT)
    ref = exact_implicit_gradient(f, W, U, x, target, h0)
    h = fixed_point(f, h0, grad=mode, **kwargs)
    got = torch.autograd.grad(loss_fn(h, target), [W, U, x])
    for a, b, name in zip(got, ref, "WUx"):
        rel = ((a - b).norm() / b.norm()).item()
        assert rel < 1e-6, f"{mode}: d/d{name} relative error {rel:.2e}"


def test_neumann_K_equals_tbptt_K_plus_1_at_convergence():
    """Paper's proposition. Neumann with K VJPs sums K+1 terms (k = 0..K) of (J^T)^k g; TBPTT
    through the last K+1 steps sums the same K+1 terms. So neumann(K) == tbptt(K+1)."""
    f, W, U, x, target = contractive_problem(rho=0.8)
    h0 = torch.zeros(7, 2, dtype=DT)
    for K in (1, 3, 7):
        h = fixed_point(f, h0, grad="neumann", max_iter=400, backward_iter=K)
        g_neu = torch.autograd.grad(loss_fn(h, target), [W, U, x])
        h = fixed_point(f, h0, grad="tbptt", max_iter=400, backward_iter=K + 1)
        g_tb = torch.autograd.grad(loss_fn(h, target), [W, U, x])
        for a, b in zip(g_neu, g_tb):
            assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)
        # ... and differs from TBPTT with K steps, which sums one term fewer.
        h = fixed_point(f, h0, grad="tbptt", max_iter=400, backward_iter=K)
        g_short = torch.autograd.grad(loss_fn(h, target), [W, U, x])
        assert not torch.allclose(g_neu[0], g_short[0], rtol=1e-6)


def test_rbp_K_equals_neumann_K_minus_1():
    f, W, U, x, target = contractive_problem(rho=0.8)
    h0 = torch.zeros(7, 2, dtype=DT)
    h = fixed_point(f, h0, grad="rbp", max_iter=400, backward_iter=6)
    g_rbp = torch.autograd.grad(loss_fn(h, target), [W, U, x])
    h = fixed_point(f, h0, grad="neumann", max_iter=400, backward_iter=5)
    g_neu = torch.autograd.grad(loss_fn(h, target), [W, U, x])
    for a, b in zip(g_rbp, g_neu):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)


def test_bptt_equals_explicit_unrolled_loop():
    """BPTT is exact for the unrolled computation even far from convergence (10 steps, rho=0.95)."""
    f, W, U, x, target = contractive_problem(rho=0.95)
    h0 = torch.randn(7, 2, dtype=DT, requires_grad=True)
    h = fixed_point(f, h0, grad="bptt", max_iter=10)
    got = torch.autograd.grad(loss_fn(h, target), [W, U, x, h0])
    hh = h0
    for _ in range(10):
        hh = f(hh)
    ref = torch.autograd.grad(loss_fn(hh, target), [W, U, x, h0])
    assert torch.allclose(h, hh)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_all_modes_share_the_forward_sequence():
    f, *_ = contractive_problem(rho=0.95)
    h0 = torch.randn(7, 2, dtype=DT)
    outs = [fixed_point(f, h0, grad=m, max_iter=13, backward_iter=4) for m in GRAD_MODES]
    with torch.no_grad():
        ref = h0
        for _ in range(13):
            ref = f(ref)
    for out in outs:
        assert torch.equal(out.detach(), ref)


def test_tuple_state_matches_single_tensor_state():
    f, W, U, x, target = contractive_problem()
    h0 = torch.zeros(7, 2, dtype=DT)

    def f_pair(state):
        a, b = state
        h = f(torch.cat([a, b], dim=1))
        return h[:, :1], h[:, 1:]

    for mode in GRAD_MODES:
        h = fixed_point(f, h0, grad=mode, max_iter=60, backward_iter=10)
        ref = torch.autograd.grad(loss_fn(h, target), [W, U, x])
        a, b = fixed_point(f_pair, (h0[:, :1], h0[:, 1:]), grad=mode, max_iter=60, backward_iter=10)
        got = torch.autograd.grad(loss_fn(torch.cat([a, b], 1), target), [W, U, x])
        for p, q in zip(got, ref):
            assert torch.allclose(p, q, rtol=1e-10, atol=1e-13), mode


def test_gradcheck_of_implicit_modes_at_the_fixed_point():
    """torch.autograd.gradcheck: the implicit backward is the derivative of the converged map."""
    g = torch.Generator().manual_seed(3)
    W = 0.4 * torch.randn(5, 5, generator=g, dtype=DT) / math.sqrt(5)
    for mode, k in (("neumann", 200), ("cg", 40)):

        def solve(U, x, mode=mode, k=k):
            return fixed_point(lambda h: torch.tanh(W @ h + U @ x), torch.zeros(5, 1, dtype=DT),
                               grad=mode, max_iter=200, backward_iter=k)

        U = torch.randn(5, 2, generator=g, dtype=DT, requires_grad=True)
        x = torch.randn(2, 1, generator=g, dtype=DT, requires_grad=True)
        assert torch.autograd.gradcheck(solve, (U, x), eps=1e-6, atol=1e-7)


def _saved(mode, max_iter, K=5):
    f, W, U, x, target = contractive_problem(n=32, cols=16)
    with SavedTensorBytes() as mem:
        fixed_point(f, torch.zeros(32, 16, dtype=DT), grad=mode, max_iter=max_iter, backward_iter=K)
    return mem.bytes


def test_memory_implicit_modes_independent_of_max_iter():
    for mode in ("rbp", "cg", "neumann"):
        assert _saved(mode, 10) == _saved(mode, 200) > 0
    b10, b100, b200 = _saved("bptt", 10), _saved("bptt", 100), _saved("bptt", 200)
    assert b200 > 15 * b10
    # Linear growth: equal increments per step.
    assert abs((b200 - b100) - (b100 - b10) * 100 / 90) / (b200 - b100) < 0.05
    assert _saved("tbptt", 200, K=5) == _saved("tbptt", 10, K=5)
    tb5, tb10, tb20 = (_saved("tbptt", 200, K=k) for k in (5, 10, 20))
    assert tb20 - tb10 == 2 * (tb10 - tb5) > 0  # linear in K
    # The implicit modes keep exactly one step's activations, like TBPTT with K = 1, plus the
    # recurrent weight W (32 x 32 float64), which W @ h saves only when h itself requires grad.
    assert _saved("neumann", 200) - _saved("tbptt", 200, K=1) == 32 * 32 * 8


def test_stats_report_forward_and_backward():
    f, W, U, x, target = contractive_problem(rho=0.5)
    h, stats = fixed_point(f, torch.zeros(7, 2, dtype=DT), grad="neumann", max_iter=100,
                           backward_iter=40, return_stats=True)
    assert stats.forward_iters == 100
    assert len(stats.residual_trace) == 100
    assert stats.residual < 1e-12
    assert stats.residual_trace[0] > stats.residual_trace[10] > stats.residual_trace[30]
    assert stats.backward_residual is None
    loss_fn(h, target).backward()
    assert stats.backward_iters == 40
    assert stats.backward_residual < 1e-10
    d = stats.as_dict()
    assert d["forward_iters"] == 100 and d["grad"] == "neumann"


@pytest.mark.parametrize("mode", GRAD_MODES)
def test_tolerance_stops_early_and_keeps_gradients_exact(mode):
    f, W, U, x, target = contractive_problem(rho=0.5)
    h0 = torch.zeros(7, 2, dtype=DT)
    ref = exact_implicit_gradient(f, W, U, x, target, h0)
    h, stats = fixed_point(f, h0, grad=mode, max_iter=500, tol=1e-13, backward_iter=80,
                           return_stats=True)
    assert stats.forward_iters < 100
    assert stats.residual <= 1e-13
    assert stats.converged
    got = torch.autograd.grad(loss_fn(h, target), [W, U, x])
    for a, b in zip(got, ref):
        assert ((a - b).norm() / b.norm()).item() < 1e-6


def test_damping_reaches_the_same_fixed_point():
    f, W, U, x, target = contractive_problem(rho=0.5)
    h0 = torch.zeros(7, 2, dtype=DT)
    ref = exact_implicit_gradient(f, W, U, x, target, h0)
    h = fixed_point(f, h0, grad="cg", max_iter=400, damping=0.5, backward_iter=80)
    got = torch.autograd.grad(loss_fn(h, target), [W, U, x])
    for a, b in zip(got, ref):
        assert ((a - b).norm() / b.norm()).item() < 1e-6


def test_no_grad_inference_records_nothing():
    f, *_ = contractive_problem()
    with torch.no_grad(), SavedTensorBytes() as mem:
        h = fixed_point(f, torch.zeros(7, 2, dtype=DT), grad="bptt", max_iter=50)
    assert mem.bytes == 0 and not h.requires_grad


def test_float32_runs_and_matches_float64():
    f, W, U, x, target = contractive_problem()
    h0 = torch.zeros(7, 2, dtype=DT)
    ref = torch.autograd.grad(loss_fn(fixed_point(f, h0, max_iter=100, backward_iter=50), target), [W])[0]
    W32 = W.detach().float().requires_grad_(True)
    U32, x32 = U.detach().float(), x.detach().float()
    h = fixed_point(lambda h: torch.tanh(W32 @ h + U32 @ x32), h0.float(), max_iter=100, backward_iter=50)
    assert h.dtype == torch.float32
    got = torch.autograd.grad(loss_fn(h, target.float()), [W32])[0]
    assert torch.allclose(got.double(), ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- error paths


def test_unknown_mode_lists_valid_names():
    with pytest.raises(ValueError, match="bptt, tbptt, rbp, cg, neumann"):
        fixed_point(lambda h: h, torch.zeros(2), grad="adjoint")
    # aliases and case are accepted
    for name in ("CG_RBP", "Neumann-RBP", "neumann_rbp", "TBPTT"):
        fixed_point(lambda h: 0.5 * h + 1, torch.ones(2), grad=name, max_iter=60)


def test_shape_change_is_an_error():
    with pytest.raises(ValueError, match="same structure, shapes"):
        fixed_point(lambda h: torch.cat([h, h]), torch.zeros(3), max_iter=5)


def test_nan_in_h0_is_an_error():
    with pytest.raises(ValueError, match="h0 contains NaN"):
        fixed_point(lambda h: h, torch.tensor([1.0, float("nan")]))


def test_bad_budgets_are_errors():
    with pytest.raises(ValueError, match="max_iter"):
        fixed_point(lambda h: h, torch.zeros(2), max_iter=0)
    with pytest.raises(ValueError, match="backward_iter"):
        fixed_point(lambda h: h, torch.zeros(2), grad="tbptt", backward_iter=0)
    with pytest.raises(ValueError, match="damping"):
        fixed_point(lambda h: h, torch.zeros(2), damping=1.5)
    with pytest.raises(ValueError, match="tol"):
        fixed_point(lambda h: h, torch.zeros(2), tol=-1.0)


def test_divergent_map_forward_nan_says_where():
    W = torch.tensor([[3.0]], dtype=DT, requires_grad=True)
    with pytest.raises(DivergenceError, match="at iteration"):
        fixed_point(lambda h: W @ h * h, torch.full((1, 1), 2.0, dtype=DT), max_iter=100)


def test_divergent_map_warns_on_growth():
    W = torch.tensor([[2.0]], dtype=DT, requires_grad=True)
    with pytest.warns(ConvergenceWarning, match="divergent"):
        fixed_point(lambda h: W @ h, torch.ones(1, 1, dtype=DT), max_iter=60)


def test_missed_tolerance_warns_once_with_residual():
    f, *_ = contractive_problem(rho=0.99)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            fixed_point(f, torch.zeros(7, 2, dtype=DT), max_iter=3, tol=1e-12)
    msgs = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(msgs) == 1 and "relative residual" in msgs[0]


def test_backward_divergence_is_an_error():
    """Neumann/RBP diverge on the adjoint when the spectral radius of J exceeds 1."""
    W = torch.tensor([[1.8, 0.0], [0.0, 0.5]], dtype=DT, requires_grad=True)
    # Linear map with a fixed point at 0 reached from h0 = 0 but Jacobian eigenvalue 1.8.
    h = fixed_point(lambda h: W @ h, torch.zeros(2, 1, dtype=DT), grad="neumann",
                    max_iter=5, backward_iter=2000)
    with pytest.raises(DivergenceError, match="spectral\\s+radius"):
        torch.autograd.grad(h.sum() + (h * 0 + 1).sum(), [W])
    # CG only needs I - J nonsingular: it still solves (I - J^T) z = g.
    h, stats = fixed_point(lambda h: W @ h, torch.zeros(2, 1, dtype=DT), grad="cg", max_iter=5,
                           backward_iter=10, return_stats=True)
    (h.sum() + 0 * W.sum()).backward()
    assert stats.backward_residual < 1e-10


def test_spectral_radius_estimate():
    A = torch.diag(torch.tensor([0.9, -0.3, 0.1], dtype=DT))
    est = pyg_rbp.spectral_radius(lambda h: A @ h, torch.zeros(3, 1, dtype=DT), iters=200)
    assert abs(est - 0.9) < 1e-3


def test_neumann_stops_once_its_terms_underflow():
    # J = 1e-20 I in float32: the third term (1e-40 g) is subnormal, so the series stops there
    # and returns the same z as the full series would (the rest is below working precision).
    from pyg_rbp.engine.adjoint import StepLinearization, neumann_solve

    h = torch.ones(4, 3, requires_grad=True)
    out = h * 1e-20
    lin = StepLinearization((out,), (h,))
    g = (torch.full((4, 3), 2.0),)
    z, used = neumann_solve(lin, g, iters=20)
    assert used == 2
    assert torch.equal(z[0], torch.full((4, 3), 2.0))  # 2 + 2e-20 rounds to 2 in float32
    # float64 represents 1e-40: no early stop, all 20 terms are taken
    h64 = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    lin64 = StepLinearization((h64 * 1e-20,), (h64,))
    _, used64 = neumann_solve(lin64, (torch.full((4, 3), 2.0, dtype=torch.float64),), iters=20)
    assert used64 == 16  # (1e-20)^16 = 1e-320 is subnormal in float64 too


def test_flush_denormals_context_flushes_and_restores():
    from pyg_rbp.numerics import flush_denormals

    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32
    assert float(tiny * 1.0) != 0.0
    with flush_denormals() as on:
        inside = float(tiny * 1.0)
    assert float(tiny * 1.0) != 0.0  # restored
    if on:
        assert inside == 0.0
    with flush_denormals(enabled=False) as on:
        assert on is False and float(tiny * 1.0) != 0.0


def test_rbp_and_cg_need_one_backward_iteration_and_neumann_zero_keeps_g():
    for mode in ("rbp", "cg"):
        with pytest.raises(ValueError, match="backward_iter must be an integer >= 1"):
            fixed_point(lambda h: h, torch.zeros(2), grad=mode, backward_iter=0)
    # Neumann with K = 0 keeps the first term only: the gradient of one step at the fixed point
    f, W, U, x, target = contractive_problem()
    h = fixed_point(f, torch.zeros(7, 2, dtype=DT), grad="neumann", max_iter=200, backward_iter=0)
    got = torch.autograd.grad(loss_fn(h, target), [W, U, x])
    with torch.no_grad():
        hs = fixed_point(f, torch.zeros(7, 2, dtype=DT), max_iter=200)
    out = f(hs)
    hl = out.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(hl, target), [hl])
    want = torch.autograd.grad(out, [W, U, x], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["rbp", "cg", "neumann"])
def test_output_of_implicit_modes_can_be_modified_in_place(mode):
    """*= and relu_() on the solution work and give the gradient of the out-of-place ops.

    (Under bptt/tbptt the output is f's own output, which f may have saved for backward.)
    """
    f, W, U, x, target = contractive_problem()
    h = fixed_point(f, torch.zeros(7, 2, dtype=DT), grad="bptt", max_iter=300)
    want = torch.autograd.grad(loss_fn((2.0 * h).relu(), target), [W, U, x])
    h = fixed_point(f, torch.zeros(7, 2, dtype=DT), grad=mode, max_iter=300, backward_iter=300)
    h *= 2.0
    h.relu_()
    got = torch.autograd.grad(loss_fn(h, target), [W, U, x])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("mode", ["rbp", "cg", "neumann"])
def test_second_order_gradients_of_implicit_modes_are_an_error(mode):
    f, W, U, x, target = contractive_problem()
    h = fixed_point(f, torch.zeros(7, 2, dtype=DT), grad=mode, max_iter=100, backward_iter=30)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(loss_fn(h, target), [x], create_graph=True)
    # first order still works on a fresh solve
    h = fixed_point(f, torch.zeros(7, 2, dtype=DT), grad=mode, max_iter=100, backward_iter=30)
    (gx,) = torch.autograd.grad(loss_fn(h, target), [x])
    assert torch.isfinite(gx).all() and float(gx.abs().sum()) > 0


@pytest.mark.parametrize("mode", GRAD_MODES)
def test_nothing_requiring_grad_gives_an_output_that_does_not(mode):
    """A frozen map (no parameter or input requiring grad) records nothing in any mode."""
    f, W, U, x, target = contractive_problem()
    for t in (W, U, x):
        t.requires_grad_(False)
    h = fixed_point(f, torch.zeros(7, 2, dtype=DT), grad=mode, max_iter=50, backward_iter=5)
    assert not h.requires_grad and h.grad_fn is None
    # one tensor requiring grad upstream of the closure is enough to record the step
    x.requires_grad_(True)
    h = fixed_point(f, torch.zeros(7, 2, dtype=DT), grad=mode, max_iter=50, backward_iter=5)
    assert h.requires_grad


def test_a_large_fixed_point_is_not_called_divergent():
    """The state's norm growing 1e6x from h0 = 0 is fine when it has settled (residual ~0)."""
    c = torch.full((50, 4), 1e6, dtype=DT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        h = fixed_point(lambda h: 0.5 * h + c, torch.zeros(50, 4, dtype=DT), max_iter=100)
    torch.testing.assert_close(h, 2 * c)
