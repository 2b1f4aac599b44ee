r"""Solvers for the adjoint system of a fixed point: :math:`(I - J^\top) z = g`.

At a fixed point :math:`h^* = f(h^*)` the gradient of a loss :math:`L(h^*)` with respect to
anything ``f`` depends on is :math:`(\partial f / \partial \theta)^\top z` where ``z`` solves the
adjoint system above, :math:`J = \partial f / \partial h` at :math:`h^*` and
:math:`g = \partial L / \partial h^*`. The three recurrent back-propagation variants of
Liao et al. (2018) differ only in how they approximate ``z``:

* :func:`neumann_solve`: the truncated Neumann series :math:`\sum_{k=0}^{K} (J^\top)^k g`.
* :func:`rbp_solve`: Almeida-Pineda fixed-point iteration :math:`z \leftarrow J^\top z + g`.
* :func:`cg_solve`: conjugate gradient on the normal equations
  :math:`(I - J)(I - J^\top) z = (I - J) g`.

Beyond the paper, :func:`gmres_solve` runs restarted GMRES on the adjoint system itself: one VJP
per iteration and no squared condition number, converging wherever :math:`I - J^\top` is
nonsingular (also where the spectral radius of :math:`J` is >= 1 and the series diverge).

All of them only need products with :math:`J^\top` (vector-Jacobian products, VJPs) and, for CG,
with :math:`J` (Jacobian-vector products, JVPs), which :class:`StepLinearization` computes from
the autograd graph of a single recorded step of ``f``. Nothing here knows about graphs.

States are tuples of tensors throughout, so that a state made of several tensors (weights and
momenta, say) is one vector of the adjoint system.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

State = tuple[Tensor, ...]

_TINY = 1e-30


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Inner product of two states (sum over their tensors)."""
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def norm(a: Sequence[Tensor]) -> Tensor:
    """Euclidean norm of a state."""
    return torch.sqrt(sum(x.pow(2).sum() for x in a))  # type: ignore[arg-type]


def axpy(alpha: Tensor | float, x: Sequence[Tensor], y: Sequence[Tensor]) -> State:
    """``alpha * x + y`` for states."""
    return tuple(alpha * xi + yi for xi, yi in zip(x, y))


class StepLinearization:
    r"""Products with the Jacobian of one recorded step ``outputs = f(inputs)``.

    ``vjp(v)`` is :math:`J^\top v`: one reverse pass through the retained graph of the step.
    ``jvp(v)`` is :math:`J v`, obtained generically by the double-VJP trick: with a dummy
    cotangent ``u``, :math:`w(u) = J^\top u` is linear in ``u``, so
    :math:`\partial \langle w(u), v \rangle / \partial u = J v`. The graph of :math:`w(u)` is
    built once, on the first JVP, and reused. No model needs forward-mode code of its own;
    each op of ``f`` only needs a differentiable backward, as PyTorch's built-in ops have.
    """

    def __init__(self, outputs: State, inputs: State) -> None:
        self.outputs = outputs
        self.inputs = inputs
        self._dual: tuple[State, list[Tensor | None]] | None = None
        self.num_vjp = 0
        self.num_jvp = 0

    def vjp(self, v: State) -> State:
        self.num_vjp += 1
        grads = torch.autograd.grad(
            self.outputs, self.inputs, v, retain_graph=True, allow_unused=True
        )
        return tuple(
            torch.zeros_like(x) if gx is None else gx for gx, x in zip(grads, self.inputs)
        )

    def jvp(self, v: State) -> State:
        self.num_jvp += 1
        if self._dual is None:
            with torch.enable_grad():
                u = tuple(torch.zeros_like(o).requires_grad_(True) for o in self.outputs)
                w = torch.autograd.grad(
                    self.outputs, self.inputs, u,
                    retain_graph=True, create_graph=True, allow_unused=True,
                )
            self._dual = (u, list(w))
        u, w = self._dual
        pairs = [(wi, vi) for wi, vi in zip(w, v) if wi is not None and wi.requires_grad]
        if not pairs:
            return tuple(torch.zeros_like(o) for o in self.outputs)
        grads = torch.autograd.grad(
            [p[0] for p in pairs], u, [p[1] for p in pairs],
            retain_graph=True, allow_unused=True,
        )
        return tuple(torch.zeros_like(o) if gu is None else gu for gu, o in zip(grads, self.outputs))

    def adjoint_residual(self, z: State, g: State) -> Tensor:
        r"""Relative residual :math:`\|z - J^\top z - g\| / \|g\|` of an adjoint solution."""
        jz = self.vjp(z)
        r = tuple(zi - ji - gi for zi, ji, gi in zip(z, jz, g))
        return norm(r) / norm(g).clamp_min(_TINY)


def _converged(value: Tensor, reference: Tensor, tol: float) -> bool:
    # Only called when the caller asked for a tolerance: one synchronisation per iteration.
    return bool(value <= tol * reference)


def neumann_solve(lin: StepLinearization, g: State, iters: int, tol: float = 0.0) -> tuple[State, int]:
    r"""Truncated Neumann series :math:`z = \sum_{k=0}^{K} (J^\top)^k g` with ``K = iters`` VJPs.

    With ``tol > 0`` the series stops once a term is smaller than ``tol * ||g||``.
    On the CPU it also stops once every entry of a term has underflowed below the smallest
    normal float (``torch.finfo(dtype).tiny``): the remaining terms are smaller still and
    cannot change ``z`` at working precision, while x86 CPUs process such subnormal numbers
    many times slower (a strongly contracting map, e.g. a Hopfield memory at its small initial
    weights, reaches them in a few terms). The check reads a value, which is free on the CPU;
    on CUDA (subnormals at full speed, reading would synchronise) it is skipped.
    Returns the approximation and the number of VJPs spent.
    """
    v = g
    z = tuple(gi.clone() for gi in g)
    g_norm = norm(g) if tol > 0 else None
    # smallest normal number per tensor; None on CUDA, where the check is skipped
    tiny = ([torch.finfo(gi.dtype).tiny for gi in g]
            if all(gi.device.type == "cpu" for gi in g) else None)
    for k in range(iters):
        v = lin.vjp(v)
        z = tuple(zi + vi for zi, vi in zip(z, v))
        if tol > 0 and _converged(norm(v), g_norm, tol):
            return z, k + 1
        if tiny is not None and all(
            vi.numel() == 0 or float(torch.linalg.vector_norm(vi, float("inf"))) < t
            for vi, t in zip(v, tiny)
        ):
            return z, k + 1  # every entry underflowed: later terms cannot change z
    return z, iters


def rbp_solve(lin: StepLinearization, g: State, iters: int, tol: float = 0.0) -> tuple[State, int]:
    r"""Almeida-Pineda fixed-point iteration :math:`z \leftarrow J^\top z + g` from :math:`z_0 = 0`.

    The first iteration gives :math:`z_1 = g` without a VJP, so ``iters`` iterations cost
    ``iters - 1`` VJPs and, in exact arithmetic, equal :func:`neumann_solve` with ``iters - 1``
    terms beyond the first. (The authors' reference code started from uniform noise instead,
    which adds a term :math:`(J^\top)^K z_0` that vanishes only when the spectral radius of
    :math:`J` is below one.) With ``tol > 0`` iteration stops once the update is below
    ``tol * ||g||``.
    """
    if iters <= 0:
        return tuple(torch.zeros_like(gi) for gi in g), 0
    z = tuple(gi.clone() for gi in g)
    g_norm = norm(g) if tol > 0 else None
    for k in range(1, iters):
        z_new = tuple(ji + gi for ji, gi in zip(lin.vjp(z), g))
        if tol > 0:
            step = norm(tuple(a - b for a, b in zip(z_new, z)))
            z = z_new
            if _converged(step, g_norm, tol):
                return z, k
        else:
            z = z_new
    return z, iters - 1


def cg_solve(lin: StepLinearization, g: State, iters: int, tol: float = 0.0) -> tuple[State, int]:
    r"""Conjugate gradient on the normal equations :math:`M^\top M z = M^\top g`, :math:`M = I - J^\top`.

    Starts from :math:`z_0 = 0`; each iteration costs one VJP and one JVP (plus one JVP to form
    the right-hand side). Converges whenever :math:`I - J` is nonsingular, at a rate set by the
    squared condition number of :math:`I - J`. With ``tol > 0`` it stops once the normal-equation
    residual is below ``tol * ||M^T g||``. Returns the solution and the iterations spent.
    """
    b = tuple(gi - ji for gi, ji in zip(g, lin.jvp(g)))
    z = tuple(torch.zeros_like(gi) for gi in g)
    r = b
    p = r
    rs = dot(r, r)
    b_norm = torch.sqrt(rs) if tol > 0 else None
    for k in range(iters):
        mp = tuple(pi - ji for pi, ji in zip(p, lin.vjp(p)))  # M p
        ap = tuple(mi - ji for mi, ji in zip(mp, lin.jvp(mp)))  # M^T M p
        p_ap = dot(mp, mp)  # <p, M^T M p> = ||M p||^2 >= 0
        alpha = rs / p_ap.clamp_min(_TINY)
        z = axpy(alpha, p, z)
        r = axpy(-alpha, ap, r)
        rs_new = dot(r, r)
        if tol > 0 and _converged(torch.sqrt(rs_new), b_norm, tol):
            return z, k + 1
        p = axpy(rs_new / rs.clamp_min(_TINY), p, r)
        rs = rs_new
    return z, iters


def _stack_dot(basis: list[Tensor], w: State, count: int) -> Tensor:
    """``[<V_0, w>, ..., <V_{count-1}, w>]`` for a basis stored as one ``[m+1, *shape]`` tensor
    per state tensor: one matrix-vector product per tensor."""
    return sum(torch.mv(b[:count].reshape(count, -1), wi.reshape(-1)) for b, wi in zip(basis, w))  # type: ignore[return-value]


def _stack_combine(basis: list[Tensor], coef: Tensor, count: int) -> State:
    """``sum_i coef_i V_i`` over the first ``count`` basis vectors."""
    return tuple((coef.to(b.dtype) @ b[:count].reshape(count, -1)).view(b.shape[1:]) for b in basis)


def _small_lstsq(hess: Tensor, beta: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Least squares ``min_y ||beta e_1 - H y||`` of the ``(k+1) x k`` Hessenberg matrix, on the
    CPU in float64 (rank-deficient ``H``, after a lucky breakdown, is fine). Returns ``y`` and
    the residual norm."""
    h = hess[: k + 1, :k].detach().to("cpu", torch.float64)
    rhs = torch.zeros(k + 1, dtype=torch.float64)
    rhs[0] = float(beta)
    y = torch.linalg.lstsq(h, rhs.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    return y, torch.linalg.vector_norm(rhs - h @ y)


def gmres_solve(lin: StepLinearization, g: State, iters: int, tol: float = 0.0,
                restart: int = 30) -> tuple[State, int]:
    r"""Restarted GMRES on the adjoint system :math:`(I - J^\top) z = g` from :math:`z_0 = 0`.

    Each iteration costs one VJP (no JVPs, no normal equations): the Krylov basis is built by
    Arnoldi with classical Gram-Schmidt (two matrix-vector products over the stacked basis),
    repeated where it cancelled more than 30 % of the vector (one host sync per iteration to
    decide; "twice is enough"), and :math:`z` minimises the residual over the basis. After
    ``restart`` iterations the basis is dropped and the solve restarts from the current
    :math:`z` (memory: ``restart + 1`` states). ``iters`` is the total VJP budget. With
    ``tol > 0`` it stops once the residual :math:`\|g - (I - J^\top) z\|` is below
    ``tol * ||g||`` (checked every iteration: one host synchronisation each); otherwise the
    small least-squares problem is solved once per restart cycle. Returns ``z`` and the VJPs
    spent.
    """
    if not isinstance(restart, int) or restart < 1:
        raise ValueError(f"gmres restart must be an integer >= 1, got {restart!r}")
    z = tuple(torch.zeros_like(gi) for gi in g)
    if iters <= 0:
        return z, 0
    g_norm = norm(g)
    r = g
    spent = 0
    while spent < iters:
        m = min(restart, iters - spent)
        beta = norm(r)
        basis = [torch.zeros((m + 1, *ri.shape), dtype=ri.dtype, device=ri.device) for ri in r]
        inv_beta = torch.where(beta > _TINY, 1.0 / beta.clamp_min(_TINY), torch.zeros_like(beta))
        for b, ri in zip(basis, r):
            b[0] = ri * inv_beta
        hess = torch.zeros((m + 1, m), dtype=torch.float64, device=g[0].device)
        k = 0
        done = False
        while k < m:
            v = tuple(b[k] for b in basis)
            jv = lin.vjp(v)
            w = tuple(vi - ji for vi, ji in zip(v, jv))
            spent += 1
            coef = _stack_dot(basis, w, k + 1)
            w_norm = norm(w)
            w = tuple(wi - ci for wi, ci in zip(w, _stack_combine(basis, coef, k + 1)))
            # Gram-Schmidt once, and again where it cancelled much ("twice is enough")
            if bool(norm(w) < 0.7 * w_norm):
                coef2 = _stack_dot(basis, w, k + 1)
                w = tuple(wi - ci for wi, ci in zip(w, _stack_combine(basis, coef2, k + 1)))
                coef = coef + coef2
            h_next = norm(w)
            hess[: k + 1, k] = coef.to(torch.float64)
            hess[k + 1, k] = h_next.to(torch.float64)
            # a (lucky) breakdown leaves a zero basis vector: the later columns are zero too
            scale = torch.where(h_next > 1e-13 * beta, 1.0 / h_next.clamp_min(_TINY),
                                torch.zeros_like(h_next))
            for b, wi in zip(basis, w):
                b[k + 1] = wi * scale
            k += 1
            if tol > 0:
                _, res = _small_lstsq(hess, beta, k)
                if float(res) <= tol * float(g_norm):
                    done = True
                    break
        y, _ = _small_lstsq(hess, beta, k)
        y_dev = y.to(g[0].device)
        z = tuple(zi + di for zi, di in zip(z, _stack_combine(basis, y_dev, k)))
        if done or spent >= iters:
            break
        # residual of the restart from the Arnoldi relation: r = V_{k+1} (beta e_1 - H y)
        e = -(hess[: k + 1, :k] @ y_dev.to(torch.float64))
        e[0] += beta.to(torch.float64)
        r = _stack_combine(basis, e, k + 1)
    return z, spent


ADJOINT_SOLVERS = {"neumann": neumann_solve, "rbp": rbp_solve, "cg": cg_solve, "gmres": gmres_solve}
"""The adjoint solvers of the built-in implicit modes (the registry is
:func:`pyg_rbp.engine.get_grad_mode`)."""
