"""``SyncGate``: when should a lower level push its accumulated update upward?

A test of "the sum of the updates since the last push is more than noise", calibrated so
that on pure noise it fires with probability ``alpha`` at each step, whatever the number of
coordinates D and their scales. The math note, with the measurements, is in docs/dynamics.md.

H0: within the window (the t updates since the last push) the updates are independent and
each coordinate is symmetric about zero, with its own unknown scale and any tails.

Per coordinate j the gate keeps, in float32, S_j = sum_k u_kj (the pending push),
Q_j = sum_k u_kj^2 and P_j = sum_k u_kj^4 (each update divided by the RMS of the window's first
nonzero update: no ratio below changes, and u^4 stays in range). r_j = S_j^2 / Q_j in [0, t].
Given the magnitudes the signs are fair coins under H0, so E[r_j] = 1 exactly and
Var[r_j | |u|] = 2 (1 - P_j / Q_j^2), whatever the noise law; for Gaussian noise
r_j / t ~ Beta(1/2, (t - 1) / 2) exactly (the one-sample t test), variance v_t = 2 (t-1)/(t+2).
A drift mu_j against noise sigma_j raises E[r_j] by about (t - 1) mu_j^2 / (sigma_j^2 + mu_j^2).

The pooled statistic X = sum_j r_j over the D active coordinates has mean D under H0. Its null
law is the Gaussian one, a sum of D i.i.d. t Beta(1/2, (t - 1) / 2) (:func:`null_tail`: the exact
Beta tail for D = 1, a lattice convolution below 64, a Pearson type III from there). Two
corrections, both identities for independent Gaussian coordinates:

- heavy tails: the variance is also measured, v_hat = (2 / D) sum_j (1 - P_j / Q_j^2), blended
  with v_t by the weight (D - 1) / (D - 1 + 100), and X - D is rescaled by sqrt(v_t / v_bar);
- correlated coordinates (real gradients: measured design effects of 500-800 over 18,432
  coordinates): X's variance is deff times D v_t. The gate measures deff on its own stream,
  from differences of paired updates (drift cancels), and reads the law of D / deff
  independent units (:func:`drift_pvalue`). Until it has measured it (4 updates) it only
  pushes at ``max_interval``.

Push (``"coherent"``) when p < alpha and at least ``min_interval`` steps (and 2 updates) passed;
at ``max_interval`` steps regardless (``"max_interval"``). Disabled: every ``min_interval`` steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from layers.dynamics.config import SyncConfig

EXACT_BELOW = 64  # fewer active coordinates: the null law by lattice convolution, else Pearson type III
PRIOR_COORDINATES = 100.0  # weight of the Gaussian variance v_t against the measured one, in coordinates
LATTICE = 1024  # lattice cells per coordinate for the convolution (tail error < 0.1% of alpha)
R_MAX = 64.0  # r beyond this has probability < 1e-14 under H0 for every t: the lattice stops there
ACTIVE = 1e-18  # Q_j at or below this (relative to the first update's mean square) is a zero coordinate
NOISE_MEMORY = 50  # noise measurements (one per 4 updates) the design effect averages over (EMA)
PRETEST_Z = 3.0  # the measured design effect is used once it exceeds 1 by this many standard errors
CONFIDENCE = 0.9  # ... as an upper confidence bound at this level
_TINY = 1e-300


def betainc(x: Tensor | float, a: Tensor | float, b: Tensor | float) -> Tensor:
    """Regularised incomplete beta I_x(a, b), elementwise in float64 (continued fraction, Lentz)."""
    x, a, b = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64) for v in (x, a, b)))
    flip = x > (a + 1) / (a + b + 2)  # the fraction converges fast on this side
    xx, aa, bb = torch.where(flip, 1 - x, x), torch.where(flip, b, a), torch.where(flip, a, b)
    xx = xx.clamp(_TINY, 1 - 1e-16)
    log_front = (torch.lgamma(aa + bb) - torch.lgamma(aa) - torch.lgamma(bb)
                 + aa * torch.log(xx) + bb * torch.log1p(-xx))
    c, d = torch.ones_like(xx), 1 - (aa + bb) * xx / (aa + 1)
    d = 1 / torch.where(d.abs() < _TINY, _TINY, d)
    f = d.clone()
    for m in range(1, 1000):
        for num in (m * (bb - m) * xx / ((aa + 2 * m - 1) * (aa + 2 * m)),
                    -(aa + m) * (aa + bb + m) * xx / ((aa + 2 * m) * (aa + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / torch.where(d.abs() < _TINY, _TINY, d)
            c = 1 + num / c
            c = torch.where(c.abs() < _TINY, _TINY, c)
            delta = c * d
            f = f * delta
        if bool(((delta - 1).abs() < 1e-15).all()):
            break
    out = torch.exp(log_front) * f / aa
    out = torch.where(flip, 1 - out, out)
    return torch.where(x <= 0, 0.0, torch.where(x >= 1, 1.0, out))


def gaussian_variance(t: int) -> float:
    """Var[r_j] for Gaussian noise after ``t`` updates: 2 (t - 1) / (t + 2)."""
    return 2 * (t - 1) / (t + 2)


def _skewness(t: int) -> float:
    """Skewness of r_j = t Beta(1/2, (t - 1) / 2): 0 at t = 2, sqrt(8) (chi-square 1) as t grows."""
    return 4 * (t - 2) * math.sqrt((t + 2) / 2) / ((t + 4) * math.sqrt(t - 1))


@functools.lru_cache(maxsize=64)
def _coordinate_lattice(t: int) -> tuple[Tensor, float]:
    """One coordinate's law t Beta(1/2, (t - 1) / 2) on the lattice of step h: (pmf, h).

    The law on [0, min(t, R_MAX)] is cut into LATTICE cells; a cell's mass is split between its
    two ends so that its mean is kept exactly (the partial means come from I_x(3/2, b)). Cached
    per t: the incomplete beta is most of the cost (about 10 ms), and the gate's number of
    independent units varies with its measured design effect while t stays within max_interval.
    """
    a, b = 0.5, (t - 1) / 2
    top = min(float(t), R_MAX)
    h = top / LATTICE
    edges = torch.arange(LATTICE + 1, dtype=torch.float64) * h
    cdf = betainc(edges / t, a, b)
    cdf[-1] = 1.0  # the truncated tail (< 1e-14) joins the last cell
    mass = cdf[1:] - cdf[:-1]
    first = t * a / (a + b) * betainc(edges / t, a + 1, b)  # E[r; r <= edge]
    first[-1] = 1.0  # E[r] = 1
    mean = (first[1:] - first[:-1]) / mass.clamp_min(_TINY)  # the mean of r within each cell
    frac = (mean / h - torch.arange(LATTICE, dtype=torch.float64)).clamp(0, 1)
    pmf = torch.zeros(LATTICE + 1, dtype=torch.float64)
    pmf[:-1] += mass * (1 - frac)
    pmf[1:] += mass * frac
    return pmf, h


@functools.lru_cache(maxsize=64)
def _coordinate_spectrum(t: int, fft: int) -> Tensor:
    """rfft of :func:`_coordinate_lattice`'s pmf zero-padded to ``fft`` points (cached per (t, fft))."""
    return torch.fft.rfft(_coordinate_lattice(t)[0], fft)


@functools.lru_cache(maxsize=64)
def _lattice_survival(t: int, count: int) -> tuple[Tensor, Tensor, float]:
    """The Gaussian null law of X = sum of ``count`` r_j on a lattice of step h: (pmf, survival, h),
    the count-fold convolution (FFT) of :func:`_coordinate_lattice`."""
    h = _coordinate_lattice(t)[1]
    size = count * LATTICE + 1
    fft = 1 << (size - 1).bit_length()
    total = torch.fft.irfft(_coordinate_spectrum(t, fft) ** count, fft)[:size].clamp_min(0)
    total = total / total.sum()
    survival = total.flip(0).cumsum(0).flip(0)  # P(K >= k)
    return total, survival, h


def null_tail(x: Tensor | float, t: int, count: int) -> Tensor:
    """P(X >= x) for X = sum of ``count`` i.i.d. t Beta(1/2, (t - 1) / 2): the Gaussian null law of
    the pooled statistic after ``t`` >= 2 updates (exact for count = 1; lattice convolution below
    ``EXACT_BELOW``; Pearson type III from there on). Elementwise over ``x`` (float64)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if t < 2 or count < 1:
        raise ValueError(f"null_tail: needs t >= 2 updates and count >= 1 coordinates, got t={t}, count={count}")
    if count == 1:
        return 1 - betainc((x / t).clamp(0, 1), 0.5, (t - 1) / 2)
    if count < EXACT_BELOW:
        pmf, survival, h = _lattice_survival(t, count)
        k = (x / h).clamp(0, len(pmf) - 1)
        nearest = k.round().long()
        above = survival[(nearest + 1).clamp_max(len(pmf) - 1)] * (nearest + 1 < len(pmf))
        p = above + pmf[nearest] * (nearest + 0.5 - k).clamp(0, 1)  # each lattice mass spread over its cell
        return torch.where(x <= 0, 1.0, p.clamp(0, 1))
    variance, skew = gaussian_variance(t), _skewness(t)
    z = (x - count) / math.sqrt(count * variance)
    if skew * skew < 4 * count * 1e-12:  # t = 2: symmetric, the normal law
        return 0.5 * torch.erfc(z / math.sqrt(2))
    shape = 4 * count / (skew * skew)
    y = (shape + z * math.sqrt(shape)).clamp_min(0)
    return torch.special.gammaincc(torch.tensor(shape, dtype=torch.float64), y)


def drift_statistic(sums: Tensor, squares: Tensor, fourths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-window reductions over the last dimension: (X = sum_j S_j^2 / Q_j, sum_j (1 - P_j / Q_j^2),
    the number of active coordinates); elementwise in float32, summed in float64. Coordinates with
    Q_j <= ``ACTIVE`` are left out (S_j^2 <= t Q_j, so they add nothing to X anyway)."""
    active = squares > ACTIVE
    q = torch.where(active, squares, 1.0)
    x = (sums * sums / q).sum(-1, dtype=torch.float64)
    spread = (active.float() - fourths / q / q).clamp_min(0).sum(-1, dtype=torch.float64)
    return x, spread, active.sum(-1)


def drift_pvalue(x: Tensor | float, spread: Tensor | float, count: int, t: int, deff: float = 1.0) -> Tensor:
    """The gate's p-value P_H0(X >= x) after ``t`` updates over ``count`` active coordinates, from
    :func:`drift_statistic`'s X and spread (the measured variance is 2 spread / count), for coordinates
    whose r_j have the design effect ``deff`` (Var X = deff x count x Var r_j; 1: independent). 1 when
    there is no evidence (t < 2 or no active coordinate). Elementwise over ``x`` and ``spread``."""
    x, spread = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(spread, dtype=torch.float64)
    if t < 2 or count < 1:
        return torch.ones_like(x)
    deff = min(max(float(deff), 1.0), float(count))
    units = max(1, round(count / deff))  # independent units the coordinates are worth
    v_t = gaussian_variance(t)
    w = (units - 1) / (units - 1 + PRIOR_COORDINATES)
    v_bar = (w * 2 * spread / count + (1 - w) * v_t).clamp_min(1e-12 * v_t)
    standard = units + (x - count) * torch.sqrt(units * v_t / (count * deff * v_bar))
    return null_tail(standard, t, units)


def design_effect(deff_pairs: float, t: int) -> float:
    """The design effect of X after ``t`` updates from the one measured on pairs (t = 2): for weakly
    correlated Gaussian coordinates Corr(r_i, r_j) = kappa_t rho_ij^2 with kappa_t = t / (t + 2)
    (measured: 0.50, 0.58, 0.66, 0.76, 0.82, 0.90 at t = 2, 3, 4, 6, 8, 16), so
    deff_t = 1 + 2 t / (t + 2) (deff_2 - 1); strongly correlated coordinates make it an overestimate."""
    return 1 + 2 * t / (t + 2) * max(deff_pairs - 1, 0.0)


def chi2_lower(m: float, q: float) -> float:
    """The ``q`` quantile of chi-square with ``m`` degrees of freedom (Wilson-Hilferty; m >= 1)."""
    z = math.sqrt(2) * torch.special.erfinv(torch.tensor(2 * q - 1, dtype=torch.float64)).item()
    return max(m * (1 - 2 / (9 * m) + z * math.sqrt(2 / (9 * m))) ** 3, 1e-3 * m)


class SyncGate:
    """Decides pushes from the stream of updates a level accumulates (see the module docstring).

    Read-only to others: ``steps`` (updates since the last push), ``samples`` (updates in the
    statistics: ``steps`` except after a checkpoint of the former EMA gate), and of the last update
    ``pvalue``, ``statistic`` (X - D over sqrt(D v_t): a z-score for independent coordinates) and
    ``deff`` (the design effect used, None while the stream's noise is not measured yet).
    """

    def __init__(self, config: SyncConfig | None = None) -> None:
        self.config = config or SyncConfig()
        self.sums: list[Tensor] | None = None
        self.squares: list[Tensor] | None = None
        self.fourths: list[Tensor] | None = None
        self.scale: float | None = None
        self.steps = self.samples = 0
        self.pvalue, self.statistic = 1.0, 0.0
        self.deff: float | None = None
        # the stream's noise structure (kept across pushes): an update waiting for its partner, a pair
        # difference waiting for its partner, and decayed sums of (sum_j s_j)^2, sum_j s_j^2, weights
        self.prev: list[Tensor] | None = None
        self.diff: list[Tensor] | None = None
        self.noise = [0.0, 0.0, 0.0, 0.0]

    def observe(self, update: Tensor | Mapping[str, Tensor]) -> str | None:
        """Feed one update; returns ``"coherent"`` or ``"max_interval"`` when it is time to push, else None.

        Raises ``ValueError`` when the update's structure (parts, shapes) changed since the first one."""
        c = self.config
        if not c.enabled:
            self.steps += 1
            return "max_interval" if self.steps >= c.min_interval else None
        parts = [p.detach() for p in (update.values() if isinstance(update, Mapping) else [update])]
        self._check(parts)
        self.steps += 1
        self._accumulate(parts)
        self._measure_noise(parts)
        self.pvalue, self.statistic = self._test()
        if self.steps >= c.max_interval:
            return "max_interval"
        if self.steps >= c.min_interval and self.pvalue < c.alpha:
            return "coherent"
        return None

    def _check(self, parts: Sequence[Tensor]) -> None:
        """Within a window the structure is fixed; after a push (e.g. a rank growth) it may change, and
        then only the half-made noise measurement is dropped."""

        def differs(ref: Sequence[Tensor]) -> bool:
            return len(parts) != len(ref) or any(p.shape != r.shape for p, r in zip(parts, ref, strict=True))

        if self.sums is not None and differs(self.sums):
            raise ValueError("SyncGate.observe: update structure changed since the last push")
        if (self.prev is not None and differs(self.prev)) or (self.diff is not None and differs(self.diff)):
            self.prev = self.diff = None

    def _accumulate(self, parts: Sequence[Tensor]) -> None:
        if self.sums is None:
            self.sums = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in parts]
            self.squares = [torch.zeros_like(s) for s in self.sums]
            self.fourths = [torch.zeros_like(s) for s in self.sums]
        if not self.scale:
            total = sum(float(p.double().square().sum()) for p in parts)
            count = sum(p.numel() for p in parts)
            self.scale = math.sqrt(total / count) if total > 0 else None
        if self.scale:
            for p, s, q, f in zip(parts, self.sums, self.squares, self.fourths, strict=True):
                u = p.float() / self.scale
                u2 = u * u
                s.add_(u)
                q.add_(u2)
                f.addcmul_(u2, u2)
        self.samples += 1

    def _measure_noise(self, parts: Sequence[Tensor]) -> None:
        """Pair the stream's updates (1, 2), (3, 4), ...: a pair's difference has no drift. Two pair
        differences a, b give s_j = 2 a_j b_j / (a_j^2 + b_j^2) per coordinate (scale-free, mean 0 and
        independent across j under H0 with independent coordinates); E[(sum_j s_j)^2] / E[sum_j s_j^2]
        is the design effect of X at t = 2."""
        if self.prev is None:
            self.prev = [p.float().clone() for p in parts]
            return
        difference = [a - p.float() for a, p in zip(self.prev, parts, strict=True)]
        self.prev = None
        if self.diff is None:
            self.diff = difference
            return
        total = square = 0.0
        for a, b in zip(self.diff, difference, strict=True):
            top = torch.maximum(a.abs(), b.abs())
            active = top > 0
            top = torch.where(active, top, 1.0)
            a, b = a / top, b / top
            s_j = torch.where(active, 2 * a * b / (a * a + b * b).clamp_min(1e-30), 0.0)
            total += float(s_j.double().sum())
            square += float(s_j.double().square().sum())
        self.diff = None
        if square > 0:
            keep = 1 - 1 / NOISE_MEMORY
            num, den, weights, weights2 = self.noise
            self.noise = [keep * num + total * total, keep * den + square, keep * weights + 1,
                          keep * keep * weights2 + 1]

    def design_effect_pairs(self) -> float | None:
        """The design effect at t = 2 the gate uses: 1 unless the measured one is significantly above 1
        (then a 90% upper confidence bound on it); None before the first measurement."""
        num, den, weights, weights2 = self.noise
        if den <= 0:
            return None
        m = max(weights * weights / weights2, 1.0)  # effective number of measurements
        ratio = num / den
        if ratio <= 1 + PRETEST_Z * math.sqrt(2 / m):
            return 1.0
        return ratio * m / chi2_lower(m, 1 - CONFIDENCE)

    def _test(self) -> tuple[float, float]:
        t = self.samples
        self.deff = None
        if t < 2 or self.sums is None:
            return 1.0, 0.0
        x = spread = 0.0
        count = 0
        for s, q, f in zip(self.sums, self.squares, self.fourths, strict=True):
            xs, ss, cs = drift_statistic(s.flatten(), q.flatten(), f.flatten())
            x, spread, count = x + float(xs), spread + float(ss), count + int(cs)
        if count == 0:
            return 1.0, 0.0
        z = (x - count) / math.sqrt(count * gaussian_variance(t))
        pairs = self.design_effect_pairs()
        if pairs is None:  # the noise is not measured yet: no evidence either way
            return 1.0, z
        self.deff = design_effect(pairs, t)
        return float(drift_pvalue(x, spread, count, t, self.deff)), z

    def reset(self) -> None:
        """Call after a push: the next window starts empty (the measured noise structure is kept)."""
        self.sums = self.squares = self.fourths = None
        self.scale = None
        self.steps = self.samples = 0
        self.pvalue, self.statistic = 1.0, 0.0

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint form: window sums (float32 tensors per part, or None), scale, steps, samples, and the
        noise measurement (``prev``, ``diff``: tensors per part or None; ``noise``: four floats)."""
        return {"steps": self.steps, "samples": self.samples, "scale": self.scale,
                "sums": self.sums, "squares": self.squares, "fourths": self.fourths,
                "prev": self.prev, "diff": self.diff, "noise": list(self.noise)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (tensors are copied).

        A checkpoint of the former EMA gate (keys ``steps``, ``m1``, ``m2``) is upgraded: its EMAs
        cannot be turned into window sums, so ``steps`` is kept (``max_interval`` fires on schedule)
        and the test and the noise measurement restart with the next update. Any other layout raises
        ``ValueError``.
        """
        keys = set(state)
        if keys == {"steps", "m1", "m2"}:  # the EMA gate
            self.__init__(self.config)
            self.steps = int(state["steps"])
            return
        if keys != STATE_KEYS:
            raise ValueError(f"SyncGate.load_state_dict: expected keys {sorted(STATE_KEYS)}, got {sorted(keys)}")
        window = [state[k] for k in ("sums", "squares", "fourths")]
        if any(b is None for b in window) and any(b is not None for b in window):
            raise ValueError("SyncGate.load_state_dict: sums, squares and fourths must all be given or all None")
        if len(state["noise"]) != 4:
            raise ValueError(f"SyncGate.load_state_dict: noise must hold 4 numbers, got {state['noise']!r}")

        def copy(b: Sequence[Tensor] | None) -> list[Tensor] | None:
            return None if b is None else [t.detach().to(torch.float32).clone() for t in b]

        self.steps, self.samples = int(state["steps"]), int(state["samples"])
        self.scale = None if state["scale"] is None else float(state["scale"])
        self.sums, self.squares, self.fourths = (copy(b) for b in window)
        self.prev, self.diff = copy(state["prev"]), copy(state["diff"])
        self.noise = [float(v) for v in state["noise"]]
        self.pvalue, self.statistic = self._test()


STATE_KEYS = frozenset({"steps", "samples", "scale", "sums", "squares", "fourths", "prev", "diff", "noise"})
