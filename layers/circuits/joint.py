"""The joint test of the shared levels: is there a rank-1 direction that several members carry?

Members are the write matrices ``B_m`` (d_out x R) of one module, one per proposer, in the
shared P coordinates. Each is scaled to unit Frobenius norm, ``X_m = B_m / ||B_m||_F``, so
that every member has one vote whatever its size.

Statistic. The candidates are the top ``r`` singular pairs ``(u_j, w_j)`` of the members'
mean ``mean_m X_m`` (sigma_j > 0 fixes their orientation). Member m's signed coefficient
along candidate j is ``c_mj = u_j^T X_m w_j`` (a fraction of its norm); ``c_mj > 0`` means
it carries the candidate with the sign of the mean. The statistic is
``S = max_j (k-th largest c_mj over members)``: the best candidate that at least ``k``
members carry, rated by its k-th strongest carrier.

Null: the rotation null. Under "nothing is shared", each member's orientation is arbitrary:
``X_m`` is replaced by ``F_m diag(s_m) G_m^T`` with its own singular values ``s_m`` and
independent Haar-random frames F_m (d_out side) and G_m (R side). This keeps every
member's spectrum (a low-rank member stays low-rank, so heavy tails are accounted for) and
destroys any alignment across members. The same statistic, candidates and all, is computed
on ``draws`` such rotations. Monte Carlo test: ``p = (1 + #{S_null >= S}) / (draws + 1)``;
accepted iff ``p <= alpha``, i.e. iff ``S > t`` where t is the ``floor(alpha (draws + 1))``-th
largest null value. The false-acceptance rate is alpha (exactly, for members whose
distribution is rotation invariant, e.g. Gaussian noise, or private parts in random
orientations). The carriers are the members with ``c_mj* > t``: at least k of them.

Cost. The d_out-side frames are drawn in the p = sum_m rank_m dimensional span they occupy
(Bartlett decomposition of the Wishart Gram matrix), so a draw costs O(p R^2), not
O(d_out R^2); all draws are one batched SVD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class JointTest:
    """One joint test of one module's members.

    Attributes:
        accepted: p_value <= alpha.
        stat: S, the observed statistic (a fraction of a member's norm).
        threshold: t, the null's critical value; member m carries the direction when
            ``coefficients[m] > threshold`` (in B units: ``threshold * ||B_m||_F``).
        p_value: the Monte Carlo p-value.
        u, w: the best candidate (unit, (d_out,) and (R,), float64), oriented so that the mean carries it positively.
        coefficients: (n,) ``u^T X_m w`` of every member along it (normalised units).
    """

    accepted: bool
    stat: float
    threshold: float
    p_value: float
    u: Tensor
    w: Tensor
    coefficients: Tensor


def statistic(x: Tensor, k: int, r: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The joint statistic of members ``x`` (..., n, D, R), batched over leading dims.

    Returns ``(S (...,), best j (...,), U (..., D, r), V (..., R, r), c (..., n, r))``: the
    statistic, the index of the best candidate, the candidates and the coefficients.
    """
    mean = x.mean(dim=-3)  # (..., D, R)
    u, _, vh = torch.linalg.svd(mean, full_matrices=False)  # (..., D, q), (..., q, R)
    u, v = u[..., :r], vh[..., :r, :].transpose(-1, -2)  # (..., D, r), (..., R, r)
    c = torch.einsum("...dj,...ndr,...rj->...nj", u, x, v)  # (..., n, r): u_j^T X_m w_j
    kth = torch.topk(c, k, dim=-2).values[..., -1, :]  # (..., r): the k-th largest member per candidate
    s, best = kth.max(dim=-1)
    return s, best, u, v, c


def _haar(rng: np.random.Generator, draws: int, dim: int, size: int) -> np.ndarray:
    """(draws, dim, size) orthonormal frames, Haar distributed (QR of a Gaussian, R's diagonal made positive)."""
    q, rr = np.linalg.qr(rng.standard_normal((draws, dim, size)))
    return q * np.sign(np.diagonal(rr, axis1=-2, axis2=-1))[..., None, :]


def _left_frames(rng: np.random.Generator, draws: int, dim: int, sizes: list[int]) -> list[np.ndarray]:
    """Independent Haar frames (dim x size_m) for every member, in common coordinates of dimension
    D = min(dim, sum sizes): the same joint distribution up to one isometry, which no statistic
    of the rotation null can see. For dim > D the Gaussian matrix G (dim x D) is written as
    Q T with T upper triangular (Bartlett: T_ii^2 ~ chi2(dim - i), T_ij ~ N(0, 1) above)."""
    p = sum(sizes)
    if dim <= p:
        g = rng.standard_normal((draws, dim, p))
    else:
        g = np.triu(rng.standard_normal((draws, p, p)), 1)
        idx = np.arange(p)
        g[:, idx, idx] = np.sqrt(rng.chisquare(dim - idx, size=(draws, p)))
    frames, start = [], 0
    for size in sizes:
        q, rr = np.linalg.qr(g[:, :, start:start + size])
        frames.append(q * np.sign(np.diagonal(rr, axis1=-2, axis2=-1))[..., None, :])
        start += size
    return frames


def null_statistics(spectra: list[Tensor], d_out: int, rank: int, k: int, r: int, draws: int,
                    seed: int | list[int]) -> Tensor:
    """``draws`` values of the statistic under the rotation null, for members with singular values
    ``spectra`` (each (q_m,), float64) in d_out x R matrices. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    sizes = [int(s.numel()) for s in spectra]
    left = _left_frames(rng, draws, d_out, sizes)
    members = []
    for f, s in zip(left, spectra, strict=True):
        g = _haar(rng, draws, rank, s.numel())  # (draws, R, q_m)
        members.append((f * s.numpy()[None, None, :]) @ np.swapaxes(g, -1, -2))  # (draws, D, R)
    x = torch.from_numpy(np.stack(members, axis=1))  # (draws, n, D, R)
    return statistic(x, k, min(r, x.shape[-2], x.shape[-1]))[0]


def joint_test(x: Tensor, *, k: int, alpha: float, draws: int, candidates: int,
               seed: int | list[int] = 0) -> JointTest:
    """Test members ``x`` (n, d_out, R), each of unit Frobenius norm (float64), for a direction
    that at least ``k`` of them carry with the sign of their mean.

    ``candidates``: top singular pairs of the mean examined (the null examines as many).
    Raises ``ValueError`` when n < k, or when ``draws`` is too small for ``alpha``
    (``alpha (draws + 1) < 1``: no p-value could be small enough).
    """
    n, d_out, rank = x.shape
    allowed = math.floor(alpha * (draws + 1) + 1e-9) - 1  # null values the statistic may lie below
    if n < k:
        raise ValueError(f"joint_test: {n} member(s), fewer than k = {k}")
    if allowed < 0:
        raise ValueError(f"joint_test: draws = {draws} too few for alpha = {alpha} "
                         f"(need >= {math.ceil(1 / alpha) - 1})")
    r = min(candidates, d_out, rank)
    s, best, u, v, c = statistic(x, k, r)
    spectra = []
    for m in range(n):
        sv = torch.linalg.svdvals(x[m])
        spectra.append(sv[sv > sv[0] * 1e-9] if float(sv[0]) > 0 else sv[:1])  # drop exact zeros: no effect
    null = null_statistics(spectra, d_out, rank, k, r, draws, seed)
    exceed = int((null >= s).sum())
    p_value = (1 + exceed) / (draws + 1)
    threshold = float(torch.sort(null, descending=True).values[allowed])
    j = int(best)
    return JointTest(p_value <= alpha, float(s), threshold, p_value, u[:, j].clone(), v[:, j].clone(),
                     c[:, j].clone())
