"""The solver behind every law: L = E + a·n^-α (+ b·d^-β), Huber loss on log loss.

Points are weighted (a bootstrap resample is a vector of counts), and many weight vectors
are solved at once, so 1,000 resamples cost a few array operations rather than 1,000
Python-level fits. Two stages, neither needing a starting point from the caller:

1. Variable projection on a grid: for fixed exponents the law is linear in (E, a, b), so
   every grid cell gets its exact non-negative weighted least squares (relative
   residuals, (pred − L)/L ≈ log pred − log L) from the 3×3 normal equations: each subset
   of {E, a, b} is solved by Cramer's rule and the best feasible one kept (the
   non-negative optimum is the unconstrained optimum on its support).
2. Refinement from the best cell: Levenberg–Marquardt on Σ w·huber(log pred − log L)
   over all parameters at once (Huber by iteratively reweighted least squares), with
   the exponents clipped to their bounds and (E, a, b) to ≥ 0.

n and d are N/N0 and D/D0 (geometric means of the points) so the columns stay near 1.
"""

from __future__ import annotations

import itertools

import numpy as np

HUBER_DELTA = 1e-3          # Hoffmann et al. 2022 and Besiroglu et al. 2024 use 1e-3
EXP_LO, EXP_HI = 0.01, 2.5  # bounds of α and β: outside them a fit is not a scaling law
_GRID_N = np.geomspace(0.02, 2.0, 48)   # α grid for L(N)
_GRID_ND = np.geomspace(0.02, 2.0, 16)  # α and β grids for L(N, D)
_EPS = 1e-300


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _nnls_cells(M: dict, v: dict, s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best non-negative θ per cell from normal equations M (dict of (i, j) -> array)
    and v (dict i -> array); returns (θ of shape (..., k), SSE)."""
    shape = s.shape
    best_sse = s.copy()                     # θ = 0 is always feasible
    best = np.zeros(shape + (k,))
    for size in range(1, k + 1):
        for S in itertools.combinations(range(k), size):
            m = [[M[min(i, j), max(i, j)] for j in S] for i in S]
            rhs = [v[i] for i in S]
            th = _cramer(m, rhs)
            if th is None:
                continue
            ok = np.all([t >= 0 for t in th], axis=0) & np.all([np.isfinite(t) for t in th], axis=0)
            sse = s - sum(t * r for t, r in zip(th, rhs))
            take = ok & (sse < best_sse)
            best_sse = np.where(take, sse, best_sse)
            for idx, t in zip(S, th):
                best[..., idx] = np.where(take, t, best[..., idx])
            for idx in set(range(k)) - set(S):
                best[..., idx] = np.where(take, 0.0, best[..., idx])
    return best, best_sse


def _cramer(m: list, r: list) -> list | None:
    with np.errstate(divide="ignore", invalid="ignore"):
        if len(r) == 1:
            return [r[0] / m[0][0]]
        if len(r) == 2:
            det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
            det = np.where(np.abs(det) < 1e-14 * (np.abs(m[0][0] * m[1][1]) + _EPS), np.nan, det)
            return [(r[0] * m[1][1] - m[0][1] * r[1]) / det, (m[0][0] * r[1] - r[0] * m[1][0]) / det]
        a, b, c = m
        det3 = lambda c0, c1, c2: (c0[0] * (c1[1] * c2[2] - c1[2] * c2[1])
                                   - c1[0] * (c0[1] * c2[2] - c0[2] * c2[1])
                                   + c2[0] * (c0[1] * c1[2] - c0[2] * c1[1]))
        cols = [[a[0], b[0], c[0]], [a[1], b[1], c[1]], [a[2], b[2], c[2]]]
        det = det3(*cols)
        scale = np.abs(a[0] * b[1] * c[2]) + _EPS
        det = np.where(np.abs(det) < 1e-14 * scale, np.nan, det)
        return [det3(*[r if j == i else cols[j] for j in range(3)]) / det for i in range(3)]


def _grid_start(n: np.ndarray, d: np.ndarray | None, L: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Stage 1: the best grid cell per weight row; returns params (R, 3 or 5)."""
    om = W / (L * L)                                    # (R, P) relative-residual weights
    if d is None:
        ga = _GRID_N
        c1 = n[None, :] ** -ga[:, None]                 # (G, P)
        M = {(0, 0): om.sum(1)[:, None], (0, 1): om @ c1.T, (1, 1): om @ (c1 * c1).T}
        v = {0: (om @ L)[:, None], 1: (om * L) @ c1.T}
        s = (om @ (L * L))[:, None]
        M[(0, 0)] = np.broadcast_to(M[(0, 0)], M[(0, 1)].shape)
        v[0] = np.broadcast_to(v[0], v[1].shape)
        th, sse = _nnls_cells(M, v, np.broadcast_to(s, v[1].shape).copy(), 2)
        g = np.argmin(sse, axis=1)
        r = np.arange(len(W))
        return np.stack([th[r, g, 0], th[r, g, 1], ga[g]], axis=1)
    ga, gb = np.meshgrid(_GRID_ND, _GRID_ND, indexing="ij")
    ga, gb = ga.ravel(), gb.ravel()
    c1 = n[None, :] ** -ga[:, None]
    c2 = d[None, :] ** -gb[:, None]
    shape = (len(W), len(ga))
    M = {(0, 0): np.broadcast_to(om.sum(1)[:, None], shape), (0, 1): om @ c1.T, (0, 2): om @ c2.T,
         (1, 1): om @ (c1 * c1).T, (1, 2): om @ (c1 * c2).T, (2, 2): om @ (c2 * c2).T}
    v = {0: np.broadcast_to((om @ L)[:, None], shape), 1: (om * L) @ c1.T, 2: (om * L) @ c2.T}
    s = np.broadcast_to((om @ (L * L))[:, None], shape).copy()
    th, sse = _nnls_cells(M, v, s, 3)
    g = np.argmin(sse, axis=1)
    r = np.arange(len(W))
    return np.stack([th[r, g, 0], th[r, g, 1], th[r, g, 2], ga[g], gb[g]], axis=1)


def _pred(p: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray | None) -> np.ndarray:
    out = p[:, 0:1] + p[:, 1:2] * np.exp(-p[:, -2 if ln_d is not None else 2][:, None] * ln_n[None, :])
    if ln_d is not None:
        out = out + p[:, 2:3] * np.exp(-p[:, 4:5] * ln_d[None, :])
    return out


def _model(p: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray | None):
    """Predictions (R, P) and d pred / d params (R, P, k)."""
    if ln_d is None:
        E, a, al = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        x = np.exp(-al * ln_n[None, :])
        pred = E + a * x
        J = np.stack([np.ones_like(x), x, -a * ln_n[None, :] * x], axis=2)
        return pred, J
    E, a, b, al, be = (p[:, i:i + 1] for i in range(5))
    x = np.exp(-al * ln_n[None, :])
    y = np.exp(-be * ln_d[None, :])
    pred = E + a * x + b * y
    J = np.stack([np.ones_like(x), x, y, -a * ln_n[None, :] * x, -b * ln_d[None, :] * y], axis=2)
    return pred, J


def _objective(p, ln_n, ln_d, logL, W, delta):
    pred = _pred(p, ln_n, ln_d)
    r = np.log(np.maximum(pred, _EPS)) - logL[None, :]
    return (W * huber(r, delta)).sum(1)


def _refine(p: np.ndarray, ln_n, ln_d, L, W, delta: float, iters: int = 30) -> np.ndarray:
    """Stage 2: batched Levenberg–Marquardt with Huber IRLS weights and box bounds."""
    logL = np.log(L)
    k = p.shape[1]
    lo = np.array([0.0] * (k - (1 if ln_d is None else 2)) + [EXP_LO] * (1 if ln_d is None else 2))
    hi = np.array([np.inf] * (k - (1 if ln_d is None else 2)) + [EXP_HI] * (1 if ln_d is None else 2))
    p = np.clip(p, lo, hi)
    f = _objective(p, ln_n, ln_d, logL, W, delta)
    lam = np.full(len(p), 1e-3)
    eye = np.eye(k)
    for _ in range(iters):
        pred, J = _model(p, ln_n, ln_d)
        pred = np.maximum(pred, _EPS)
        r = np.log(pred) - logL[None, :]
        Jr = J / pred[:, :, None]                        # d log pred / d params
        w = W * np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), _EPS))
        Jw = Jr * w[:, :, None]
        H = Jw.transpose(0, 2, 1) @ Jr
        g = (Jw * r[:, :, None]).sum(1)
        diag = np.einsum("rii->ri", H)
        A = H + (lam[:, None, None] * (diag[:, :, None] * eye + 1e-12 * eye))
        step = -np.linalg.solve(A + 1e-18 * eye, g[:, :, None])[:, :, 0]
        q = np.clip(p + step, lo, hi)
        fq = _objective(q, ln_n, ln_d, logL, W, delta)
        better = np.isfinite(fq) & (fq < f)
        p = np.where(better[:, None], q, p)
        f = np.where(better, fq, f)
        lam = np.where(better, np.maximum(lam / 3, 1e-9), np.minimum(lam * 4, 1e9))
    return p


def solve(N: np.ndarray, D: np.ndarray | None, L: np.ndarray, W: np.ndarray,
          delta: float = HUBER_DELTA) -> np.ndarray:
    """Fit every weight row of W (R, P) to the points (N, D, L); returns raw parameters
    (R, 3) as (E, A, α) or (R, 5) as (E, A, B, α, β), with A and B for raw N and D."""
    lnN0 = float(np.mean(np.log(N)))
    ln_n = np.log(N) - lnN0
    ln_d = None
    lnD0 = 0.0
    if D is not None:
        lnD0 = float(np.mean(np.log(D)))
        ln_d = np.log(D) - lnD0
    p = _grid_start(np.exp(ln_n), None if ln_d is None else np.exp(ln_d), L, W)
    p = _refine(p, ln_n, ln_d, L, W, delta)
    out = p.copy()
    if D is None:
        out[:, 1] = p[:, 1] * np.exp(p[:, 2] * lnN0)
    else:
        out[:, 1] = p[:, 1] * np.exp(p[:, 3] * lnN0)
        out[:, 2] = p[:, 2] * np.exp(p[:, 4] * lnD0)
    return out


def predict(params: np.ndarray, N, D=None) -> np.ndarray:
    """Predictions for raw parameter rows (R, k) at points N (and D): shape (R, len(N))."""
    N = np.atleast_1d(np.asarray(N, dtype=float))
    params = np.atleast_2d(params)
    with np.errstate(over="ignore", invalid="ignore"):
        if params.shape[1] == 3:
            return params[:, :1] + params[:, 1:2] * N[None, :] ** -params[:, 2:3]
        D = np.broadcast_to(np.atleast_1d(np.asarray(D, dtype=float)), N.shape)
        return (params[:, :1] + params[:, 1:2] * N[None, :] ** -params[:, 3:4]
                + params[:, 2:3] * D[None, :] ** -params[:, 4:5])
