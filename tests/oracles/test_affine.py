"""Inference BatchNorm as an affine map: scale/offset, folding, interval bounds, derivative bounds.

Inference BatchNorm with fixed statistics is y = scale * x + offset per channel, with
scale = gamma / sqrt(var_r + eps) and offset = beta - mu_r * scale. These tests check that the four
affine-map helpers of `oracles.op_batch_norm` agree with `batch_norm_inference` itself and with the
mathematics of an affine map (exact interval propagation, Jacobian diag(scale), zero curvature).

Tolerances. Both `batch_norm_inference` and the affine form are evaluated in EXT (unit roundoff
u = `U_EXT`, 2**-64 on x86-64). Per element, with s = the exact scale and
T = |s| (|x| + |mu|) + |beta| (the magnitude of the terms), the inference formula
gamma * ((x - mu) * (1 / sqrt(v + eps))) + beta rounds 6 times (subtract, add eps, sqrt, divide,
two multiplies) and then adds beta: its error is at most about 5.5 u |s| |x - mu| + u |y| <= 6.5 u T.
The affine form rounds scale (eps add, sqrt, divide: 2.5 u relative), then s*x, mu*s, beta - mu*s
and the final add: at most about 3.5 u |s x| + 3.5 u |s mu| + u |offset| + u |y| <= 6.5 u T (first
order). The two therefore differ by at most 13 u T; `AFFINE_K = 16` leaves 3 u of room for the
second-order terms. A real disagreement (a wrong sign, a swapped mean, a missing eps) is of order T
itself, 2**60 times larger.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import oracles
from oracles import EXT
from oracles.dtypes import U_EXT

NIGHTLY = os.environ.get("NORMFUZZ_NIGHTLY") == "1"
SETTINGS = settings(derandomize=True, deadline=None, max_examples=1000 if NIGHTLY else 150)

U = EXT(U_EXT)
AFFINE_K = 16  # units of u separating two honest EXT evaluations of the same affine value (docstring)
LAYOUTS = ("channels_first", "channels_last")


# --------------------------------------------------------------------------------------------------
# helpers


def channel_shape(ndim: int, layout: str) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against an input of rank `ndim` (computed here, not
    taken from the oracle, so that a wrong channel axis in the oracle shows up)."""
    shape = [1] * ndim
    shape[1 if layout == "channels_first" else ndim - 1] = -1
    return tuple(shape)


def input_shape(rng: np.random.Generator, rank: int, c: int, layout: str) -> tuple[int, ...]:
    n = int(rng.integers(1, 4))
    spatial = tuple(int(s) for s in rng.integers(1, 4, size=rank - 2))
    return (n, c) + spatial if layout == "channels_first" else (n,) + spatial + (c,)


def bn_params(rng: np.random.Generator, c: int, *, with_gamma: bool = True, with_beta: bool = True):
    """Running statistics and affine parameters (float64) with awkward values mixed in: gamma
    negative and exactly zero in some channels, running_var exactly 0 (eps > 0 then), spread
    magnitudes."""
    rm = rng.standard_normal(c) * 10.0 ** rng.integers(-2, 3, size=c)
    rv = np.exp(rng.uniform(-6, 6, size=c))
    rv[rng.random(c) < 0.2] = 0.0
    eps = float(rng.choice([1e-5, 1e-3, 0.1]))
    gamma = beta = None
    if with_gamma:
        gamma = rng.standard_normal(c) * 10.0 ** rng.integers(-1, 2, size=c)
        gamma[0] = -abs(gamma[0]) if c > 1 else gamma[0]  # at least one negative scale
        gamma[rng.random(c) < 0.25] = 0.0
    if with_beta:
        beta = rng.standard_normal(c) * 10.0 ** rng.integers(-2, 3, size=c)
    return rm, rv, gamma, beta, eps


def affine_apply(scale, offset, x, layout):
    """scale * x + offset in EXT with the channel axis of `layout`."""
    shp = channel_shape(np.ndim(x), layout)
    return scale.reshape(shp) * np.asarray(x, dtype=EXT) + offset.reshape(shp)


def magnitude(scale, x, rm, beta, layout):
    """T = |scale| (|x| + |mu|) + |beta| per element (see the module docstring)."""
    shp = channel_shape(np.ndim(x), layout)
    b = 0 if beta is None else np.abs(np.asarray(beta, dtype=EXT)).reshape(shp)
    return (np.abs(scale).reshape(shp) * (np.abs(np.asarray(x, dtype=EXT))
                                          + np.abs(np.asarray(rm, dtype=EXT)).reshape(shp)) + b)


def assert_close(actual, expected, tol, what):
    actual, expected = np.asarray(actual, dtype=EXT), np.asarray(expected, dtype=EXT)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.abs(actual - expected)
    bad = ~(err <= tol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.where(tol > 0, tol, 1), 0)), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} elements off; at {i}: actual={actual[i]!r} "
                             f"expected={expected[i]!r} |err|={err[i]!r} tol={tol[i]!r}")


@st.composite
def bn_cases(draw, *, ranks=(2, 3, 4, 5)):
    """(rng, layout, rank, C, gamma present, beta present): arrays are built from the seed with numpy."""
    seed = draw(st.integers(0, 2**32 - 1))
    layout = draw(st.sampled_from(LAYOUTS))
    rank = draw(st.sampled_from(ranks))
    c = draw(st.integers(1, 6))
    with_gamma = draw(st.booleans())
    with_beta = draw(st.booleans())
    return np.random.default_rng(seed), layout, rank, c, with_gamma, with_beta


# --------------------------------------------------------------------------------------------------
# (a) the affine parameters reproduce batch_norm_inference


@SETTINGS
@given(bn_cases())
def test_affine_params_reproduce_inference(case):
    rng, layout, rank, c, wg, wb = case
    rm, rv, gamma, beta, eps = bn_params(rng, c, with_gamma=wg, with_beta=wb)
    x = rng.standard_normal(input_shape(rng, rank, c, layout)) * 10.0 ** rng.integers(-3, 4)
    scale, offset = oracles.batch_norm_affine_params(rm, rv, gamma, beta, eps=eps)
    assert scale.dtype == EXT and offset.dtype == EXT and scale.shape == offset.shape == (c,)
    y = oracles.batch_norm_inference(x, rm, rv, gamma, beta, eps=eps, layout=layout)
    assert y.shape == x.shape
    tol = AFFINE_K * U * magnitude(scale, x, rm, beta, layout)
    assert_close(affine_apply(scale, offset, x, layout), y, tol, "scale*x + offset vs batch_norm_inference")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_affine_params_formula_and_zero_gamma(layout):
    """scale and offset match the documented formula computed here in EXT; gamma = 0 gives scale 0
    and y == beta exactly (0 * x + (beta - mu * 0) has no rounding), gamma < 0 flips the sign."""
    rng = np.random.default_rng(7)
    c = 5
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    gamma = np.array([1.5, -2.0, 0.0, -0.0, 0.25])
    beta = rng.standard_normal(c)
    eps = 1e-5
    scale, offset = oracles.batch_norm_affine_params(rm, rv, gamma, beta, eps=eps)
    root = np.sqrt(rv.astype(EXT) + EXT(eps))
    expect_scale = gamma.astype(EXT) / root
    assert_close(scale, expect_scale, 2 * U * np.abs(expect_scale), "scale")
    assert_close(offset, beta.astype(EXT) - rm.astype(EXT) * expect_scale,
                 4 * U * (np.abs(beta) + np.abs(rm * expect_scale)).astype(EXT), "offset")
    assert np.all(np.sign(scale) == np.sign(gamma))
    x = rng.standard_normal(input_shape(rng, 4, c, layout)) * 100
    y = oracles.batch_norm_inference(x, rm, rv, gamma, beta, eps=eps, layout=layout)
    idx = [slice(None)] * x.ndim
    for ch in (2, 3):
        idx[1 if layout == "channels_first" else -1] = ch
        assert np.all(y[tuple(idx)] == EXT(beta[ch]))
        assert offset[ch] == EXT(beta[ch])


# --------------------------------------------------------------------------------------------------
# (b) folding into the preceding affine layer


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 7), st.booleans(), st.booleans())
def test_fold_into_affine(seed, c, n_in, with_bias, with_gamma):
    """BN(W @ u + b) == W' @ u + b' for random W (C x in), u (in x N) and b (or no bias)."""
    rng = np.random.default_rng(seed)
    rm, rv, gamma, beta, eps = bn_params(rng, c, with_gamma=with_gamma)
    w = rng.standard_normal((c, n_in)) * 10.0 ** rng.integers(-2, 3)
    u = rng.standard_normal((n_in, int(rng.integers(1, 5))))
    b = rng.standard_normal(c) if with_bias else None
    w2, b2 = oracles.fold_batch_norm(w, b, rm, rv, gamma, beta, eps=eps)
    assert w2.shape == w.shape and b2.shape == (c,)
    h = w.astype(EXT) @ u.astype(EXT) + (0 if b is None else b.astype(EXT)[:, None])
    y = oracles.batch_norm_inference(h.T, rm, rv, gamma, beta, eps=eps)          # (N, C)
    folded = (w2 @ u.astype(EXT) + b2[:, None]).T
    # Both sides sum n_in products (each dot product rounds at most n_in times, gamma_{n_in}), and
    # the rest is the affine-map comparison of the module docstring: magnitude of the terms
    # A = |s| (sum_j |W_ij u_j| + |b_i| + |mu_i|) + |beta_i|, tolerance (2 n_in + AFFINE_K) u A.
    scale, _ = oracles.batch_norm_affine_params(rm, rv, gamma, beta, eps=eps)
    habs = (np.abs(w.astype(EXT)) @ np.abs(u.astype(EXT))
            + (0 if b is None else np.abs(b.astype(EXT))[:, None])).T
    tol = (2 * n_in + AFFINE_K) * U * magnitude(scale, habs, rm, beta, "channels_first")
    assert_close(folded, y, tol, "W' @ u + b' vs BN(W @ u + b)")


def test_fold_conv_weight_matches_matrix_fold():
    """A conv weight (C, in, kh, kw) folds exactly as its (C, in*kh*kw) matrix does."""
    rng = np.random.default_rng(3)
    c = 4
    rm, rv, gamma, beta, eps = bn_params(rng, c)
    w = rng.standard_normal((c, 3, 2, 2))
    b = rng.standard_normal(c)
    w4, b4 = oracles.fold_batch_norm(w, b, rm, rv, gamma, beta, eps=eps)
    w2, b2 = oracles.fold_batch_norm(w.reshape(c, -1), b, rm, rv, gamma, beta, eps=eps)
    assert np.array_equal(w4.reshape(c, -1), w2) and np.array_equal(b4, b2)


# --------------------------------------------------------------------------------------------------
# (c) interval bound propagation


@SETTINGS
@given(bn_cases(), st.floats(0.0, 0.5))
def test_ibp_contains_samples_and_is_attained(case, p_degenerate):
    rng, layout, rank, c, wg, wb = case
    rm, rv, gamma, beta, eps = bn_params(rng, c, with_gamma=wg, with_beta=wb)
    shape = input_shape(rng, rank, c, layout)
    lo = rng.standard_normal(shape) * 10.0 ** rng.integers(-2, 3)
    width = np.abs(rng.standard_normal(shape)) * 10.0 ** rng.integers(-3, 2)
    width[rng.random(shape) < p_degenerate] = 0.0  # some degenerate (point) intervals
    hi = lo + width
    y_lo, y_hi = oracles.batch_norm_ibp(lo, hi, rm, rv, gamma, beta, eps=eps, layout=layout)
    assert y_lo.shape == y_hi.shape == lo.shape
    assert np.all(y_lo <= y_hi)
    scale, offset = oracles.batch_norm_affine_params(rm, rv, gamma, beta, eps=eps)
    s = scale.reshape(channel_shape(rank, layout))

    # Sampled points of the box (corners included): the affine form, evaluated with the operations
    # IBP uses, lies in [y_lo, y_hi] *exactly*, because rounded multiplication by a fixed scale and
    # rounded addition of a fixed offset are monotone. batch_norm_inference differs from the affine
    # form by rounding only (module docstring), so it lies within that tolerance of the box.
    for _ in range(4):
        t = rng.random(shape)
        t[rng.random(shape) < 0.2] = 0.0
        t[rng.random(shape) < 0.2] = 1.0
        pt = np.clip(lo + t * (hi - lo), lo, hi)
        ya = affine_apply(scale, offset, pt, layout)
        assert np.all((y_lo <= ya) & (ya <= y_hi)), "affine image of a box point outside the IBP box"
        yb = oracles.batch_norm_inference(pt, rm, rv, gamma, beta, eps=eps, layout=layout)
        tol = AFFINE_K * U * magnitude(scale, pt, rm, beta, layout)
        assert np.all((y_lo - tol <= yb) & (yb <= y_hi + tol)), "BN of a box point outside the IBP box"

    # Attained: the corner taking lo where the channel's scale is >= 0 and hi where it is < 0 maps
    # to y_lo exactly, the opposite corner to y_hi.
    corner_lo = np.where(s >= 0, lo, hi)
    corner_hi = np.where(s >= 0, hi, lo)
    assert np.array_equal(affine_apply(scale, offset, corner_lo, layout), y_lo)
    assert np.array_equal(affine_apply(scale, offset, corner_hi, layout), y_hi)
    for corner, bound in ((corner_lo, y_lo), (corner_hi, y_hi)):
        yb = oracles.batch_norm_inference(corner, rm, rv, gamma, beta, eps=eps, layout=layout)
        assert_close(yb, bound, AFFINE_K * U * magnitude(scale, corner, rm, beta, layout),
                     "BN at the extreme corner vs IBP bound")

    # Degenerate intervals: zero scale (gamma = 0) or a point box give y_lo == y_hi.
    zero = np.broadcast_to(s == 0, lo.shape) | (width == 0)
    assert np.array_equal(y_lo[zero], y_hi[zero])
    zs = np.broadcast_to(s == 0, lo.shape)
    if zs.any():  # y = 0 * x + beta, exactly beta (0 where beta is absent)
        b = np.zeros(c) if beta is None else beta
        expect = np.broadcast_to(b.astype(EXT).reshape(channel_shape(rank, layout)), lo.shape)
        assert np.array_equal(y_lo[zs], expect[zs])


def test_ibp_widths_scale_with_abs_scale():
    """The output width is |scale| times the input width (to rounding): a sign error would make it
    negative or swap the bounds, a missing eps would change the factor."""
    rng = np.random.default_rng(11)
    c = 3
    rm, rv = rng.standard_normal(c), np.array([0.25, 4.0, 1.0])
    gamma, beta = np.array([2.0, -3.0, 0.5]), rng.standard_normal(c)
    eps = 0.0
    lo = np.round(rng.standard_normal((2, c, 3)) * 1024) / 1024  # hi = lo + width exactly
    hi = lo + np.array([1.0, 2.0, 4.0])[None, :, None]
    y_lo, y_hi = oracles.batch_norm_ibp(lo, hi, rm, rv, gamma, beta, eps=eps)
    # |gamma| / sqrt(var) * width, all exact in binary: 4*1, 1.5*2, 0.5*4
    expected = np.broadcast_to(np.array([4.0, 3.0, 2.0])[None, :, None], lo.shape).astype(EXT)
    assert_close(y_hi - y_lo, expected, 8 * U * (np.abs(y_lo) + np.abs(y_hi) + 1), "IBP width")


# --------------------------------------------------------------------------------------------------
# (d) derivative bounds


@SETTINGS
@given(bn_cases())
def test_derivative_bounds(case):
    rng, layout, rank, c, wg, wb = case
    rm, rv, gamma, beta, eps = bn_params(rng, c, with_gamma=wg, with_beta=wb)
    shape = input_shape(rng, rank, c, layout)
    dlo = rng.standard_normal(shape)
    dhi = dlo + np.abs(rng.standard_normal(shape))
    out_lo, out_hi = oracles.batch_norm_derivative_bounds(dlo, dhi, rm, rv, gamma, beta, eps=eps,
                                                          layout=layout)
    scale, offset = oracles.batch_norm_affine_params(rm, rv, gamma, beta, eps=eps)
    s = np.broadcast_to(scale.reshape(channel_shape(rank, layout)), shape)
    # Exactly scale * [dlo, dhi], endpoints swapped where scale < 0.
    neg = s < 0
    assert np.array_equal(out_lo, np.where(neg, s * dhi.astype(EXT), s * dlo.astype(EXT)))
    assert np.array_equal(out_hi, np.where(neg, s * dlo.astype(EXT), s * dhi.astype(EXT)))
    assert np.all(out_lo <= out_hi)

    # The actual derivative along x(t) = x0 + t d, d in [dlo, dhi] (endpoints included, which makes
    # the bounds tight), by central differences of batch_norm_inference with h = 1 (an affine map's
    # central difference is exact for every h; h = 1 keeps the rounding unamplified). Each BN value
    # is within the affine rounding of the module docstring, so the difference quotient is within
    # AFFINE_K u (T(x0 + d) + T(x0 - d)) / 2 of scale * d.
    x0 = rng.standard_normal(shape) * 10.0 ** rng.integers(-1, 2)
    pick = rng.integers(0, 3, size=shape)
    d = np.where(pick == 0, dlo, np.where(pick == 1, dhi, np.clip(dlo + rng.random(shape) * (dhi - dlo), dlo, dhi)))
    xp, xm = x0.astype(EXT) + d.astype(EXT), x0.astype(EXT) - d.astype(EXT)
    bn = lambda x: oracles.batch_norm_inference(x, rm, rv, gamma, beta, eps=eps, layout=layout)  # noqa: E731
    fd = (bn(xp) - bn(xm)) / 2
    tol = AFFINE_K * U * (magnitude(scale, xp, rm, beta, layout) + magnitude(scale, xm, rm, beta, layout))
    assert np.all((out_lo - tol <= fd) & (fd <= out_hi + tol)), "finite-difference derivative outside bounds"
    assert_close(fd, s * d.astype(EXT), tol, "finite-difference derivative vs scale * d")
    # the JVP of inference BatchNorm is the same directional derivative
    ty = oracles.batch_norm_inference_jvp(x0, rm, rv, gamma, beta, d, eps=eps, layout=layout)
    tol_j = 8 * U * np.abs(s * d.astype(EXT))
    assert np.all((out_lo - tol_j <= ty) & (ty <= out_hi + tol_j)), "JVP outside derivative bounds"


@SETTINGS
@given(bn_cases())
def test_second_derivative_bounds(case):
    rng, layout, rank, c, wg, wb = case
    rm, rv, gamma, beta, eps = bn_params(rng, c, with_gamma=wg, with_beta=wb)
    shape = input_shape(rng, rank, c, layout)
    scale, _ = oracles.batch_norm_affine_params(rm, rv, gamma, beta, eps=eps)
    s = np.broadcast_to(scale.reshape(channel_shape(rank, layout)), shape)
    bn = lambda x: oracles.batch_norm_inference(x, rm, rv, gamma, beta, eps=eps, layout=layout)  # noqa: E731
    mag = lambda x: magnitude(scale, x, rm, beta, layout)  # noqa: E731

    # Straight line: x'' = 0, so the bounds are exactly [0, 0] ...
    zeros = np.zeros(shape)
    lo0, hi0 = oracles.batch_norm_second_derivative_bounds(zeros, zeros, rm, rv, gamma, beta, eps=eps,
                                                           layout=layout)
    assert np.all(lo0 == 0) and np.all(hi0 == 0)
    # ... and the second difference of BN along x0 + t d is zero to rounding (three BN values, each
    # within the affine-form rounding; the affine form's second difference is exactly 0 in exact
    # arithmetic, and the arguments x0 +- d round by u |x0 +- d|, which BN scales by |s|).
    x0 = rng.standard_normal(shape) * 10.0 ** rng.integers(-1, 2)
    d = rng.standard_normal(shape) * 10.0 ** rng.integers(-1, 2)
    xp, xm = x0.astype(EXT) + d.astype(EXT), x0.astype(EXT) - d.astype(EXT)
    second = bn(xp) - 2 * bn(x0) + bn(xm)
    tol = (AFFINE_K + 2) * U * (mag(xp) + 2 * mag(x0) + mag(xm))
    assert_close(second, np.zeros(shape, dtype=EXT), tol, "second difference along a line")

    # A curved path x(t) = x0 + t d + t**2 a / 2 with a in [alo, ahi]: x(1) - 2 x(0) + x(-1) = a, so
    # BN's second difference is scale * a to rounding, inside the second-derivative bounds, which
    # equal the derivative bounds of [alo, ahi].
    alo = rng.standard_normal(shape)
    ahi = alo + np.abs(rng.standard_normal(shape))
    lo2, hi2 = oracles.batch_norm_second_derivative_bounds(alo, ahi, rm, rv, gamma, beta, eps=eps,
                                                           layout=layout)
    lo1, hi1 = oracles.batch_norm_derivative_bounds(alo, ahi, rm, rv, gamma, beta, eps=eps, layout=layout)
    assert np.array_equal(lo2, lo1) and np.array_equal(hi2, hi1)
    a = np.clip(alo + rng.random(shape) * (ahi - alo), alo, ahi)
    half_a = a.astype(EXT) / 2
    xp = x0.astype(EXT) + d.astype(EXT) + half_a
    xm = x0.astype(EXT) - d.astype(EXT) + half_a
    second = bn(xp) - 2 * bn(x0) + bn(xm)
    tol = (AFFINE_K + 4) * U * (mag(xp) + 2 * mag(x0) + mag(xm))
    assert np.all((lo2 - tol <= second) & (second <= hi2 + tol)), "second difference outside bounds"
    assert_close(second, s * a.astype(EXT), tol, "second difference vs scale * a")
