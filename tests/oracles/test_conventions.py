"""The conventions, as explicit arguments, behave as documented.

Running-statistics updates are recomputed here by hand in float64 on small inputs; identities
between ops (layouts, axis forms, affine granularity, group structure, InstanceNorm = GroupNorm with
C groups, ...) are checked between oracle evaluations; formulas (RMSNorm, MVN and L2 eps modes,
weight norm) against a direct EXT evaluation written here.

Tolerances.
* float64 by hand vs the EXT oracle: the hand computation rounds each of its few operations in
  float64 (unit roundoff 2**-53); the mean and variance of n elements carry at most about
  (n + 3) 2**-53 relative to the data magnitude, an update (1-w) old + w batch adds three roundings.
  `F64_K(n) = 4 (n + 8)` units of 2**-53 times the magnitude covers it; the conventions being told
  apart differ by factors like n/(n-1), m vs 1-m, which are 10**13 times larger.
* Two EXT evaluations (oracle vs oracle through another op, or vs a direct EXT formula here):
  `ext_tol` allows 8 (n + 8) units of U_EXT relative to the magnitudes of the normalized terms,
  enough for any summation order over n elements (recursive summation's gamma_n).
* A pure transpose (layouts) or a re-spelling of the same reduction (axis vs normalized_ndim,
  repeated per-group gamma) performs the identical arithmetic, so those are compared bit for bit.
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
SETTINGS = settings(derandomize=True, deadline=None, max_examples=400 if NIGHTLY else 60)
U = EXT(U_EXT)
U64 = 2.0 ** -53


def F64_K(n):  # noqa: N802 - a constant family, see the module docstring
    return 4 * (n + 8)


def assert_f64_close(actual, expected, magnitude, n, what):
    """EXT oracle value vs a float64 hand computation (module docstring)."""
    actual = np.asarray(actual, dtype=EXT)
    expected = np.asarray(expected, dtype=np.float64).astype(EXT)
    tol = EXT(F64_K(n) * U64) * np.asarray(magnitude, dtype=EXT)
    err = np.abs(actual - expected)
    assert np.all(err <= tol), f"{what}: max err {err.max()!r}, tol {tol.min()!r}\n{actual}\n{expected}"


def ext_tol(n, *magnitudes):
    return EXT(8 * (n + 8)) * U * sum(np.abs(np.asarray(m, dtype=EXT)) for m in magnitudes)


def assert_ext_close(actual, expected, tol, what):
    actual, expected = np.asarray(actual, dtype=EXT), np.asarray(expected, dtype=EXT)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.abs(actual - expected)
    assert np.all(err <= tol), f"{what}: max err {err.max()!r} (tol there {np.ravel(tol)[np.argmax(err)]!r})"


def assert_bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b)), what


# --------------------------------------------------------------------------------------------------
# BatchNorm running statistics, by hand in float64


def _bn_batch_stats_f64(x):
    """Per-channel batch mean, biased and unbiased variance of an (N, C, *spatial) array, float64."""
    axes = (0,) + tuple(range(2, x.ndim))
    n = x.size // x.shape[1]
    return np.mean(x, axis=axes), np.var(x, axis=axes), np.var(x, axis=axes, ddof=1), n


@pytest.mark.parametrize("momentum", [0.1, 0.9, 0.0, 1.0, 0.37])
@pytest.mark.parametrize("momentum_on", ["batch", "running"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_momentum_conventions_by_hand(momentum_on, momentum, estimator):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 4)) * np.array([1.0, 10.0])[None, :, None] + np.array([0.5, -3.0])[None, :, None]
    old_m, old_v = np.array([0.25, -1.5]), np.array([2.0, 0.75])
    mean, var_b, var_u, n = _bn_batch_stats_f64(x)
    var_run = var_u if estimator == "unbiased" else var_b
    if momentum_on == "batch":  # PyTorch: new = (1 - m) old + m batch
        exp_m = (1 - momentum) * old_m + momentum * mean
        exp_v = (1 - momentum) * old_v + momentum * var_run
    else:                       # Keras/TF/ONNX: new = m old + (1 - m) batch
        exp_m = momentum * old_m + (1 - momentum) * mean
        exp_v = momentum * old_v + (1 - momentum) * var_run
    r = oracles.batch_norm_training(x, None, None, old_m, old_v, eps=1e-5, momentum=momentum,
                                    momentum_on=momentum_on, running_var_estimator=estimator)
    assert_f64_close(r.running_mean, exp_m, np.abs(old_m) + np.abs(x).max(), n, "running_mean")
    assert_f64_close(r.running_var, exp_v, np.abs(old_v) + np.abs(x).max() ** 2 * 2, n, "running_var")
    # the batch statistics that normalize are the biased ones whatever the estimator
    assert_f64_close(r.mean, mean, np.abs(x).max(), n, "mean")
    assert_f64_close(r.var, var_b, np.abs(x).max() ** 2 * 2, n, "var")
    assert_f64_close(r.rstd, 1 / np.sqrt(var_b + 1e-5), 1 / np.sqrt(var_b + 1e-5), n, "rstd")
    # the same through evaluate
    e = oracles.evaluate("batch_norm", "training", {"x": x, "running_mean": old_m, "running_var": old_v},
                         {"eps": 1e-5, "momentum": momentum, "momentum_on": momentum_on,
                          "running_var_estimator": estimator}, "float64")
    assert_bits(e.outputs["running_mean"], r.running_mean, "evaluate running_mean")
    assert_bits(e.outputs["running_var"], r.running_var, "evaluate running_var")


def test_momentum_conventions_differ_and_mirror():
    """'batch' with m and 'running' with 1 - m are the same update (to the rounding of 1 - m in
    float64); 'batch' and 'running' with the same m != 0.5 differ."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5)) + 2.0
    old_m, old_v = np.zeros(3), np.ones(3)
    run = lambda m, on: oracles.batch_norm_training(x, None, None, old_m, old_v, eps=1e-5, momentum=m,  # noqa: E731
                                                    momentum_on=on)
    a, b, c = run(0.1, "batch"), run(0.9, "running"), run(0.1, "running")
    assert_f64_close(a.running_mean, b.running_mean, 1 + np.abs(x).max(), 20, "batch m vs running 1-m")
    assert_f64_close(a.running_var, b.running_var, 1 + np.abs(x).max() ** 2, 20, "batch m vs running 1-m")
    assert np.all(np.abs(a.running_mean - c.running_mean) > 0.5)  # weights 0.1 vs 0.9 on a mean near 2


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_unbiased_factor(layout):
    """running_var(unbiased) = n/(n-1) * running_var(biased) with momentum 1 ('batch'), n the
    per-channel count; y is normalized with the biased variance either way (bit-identical)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 2, 3)) if layout == "channels_first" else rng.standard_normal((2, 2, 3, 3))
    xc = x if layout == "channels_first" else np.moveaxis(x, -1, 1)
    _, var_b, var_u, n = _bn_batch_stats_f64(xc)
    assert n == 12
    kw = dict(eps=1e-5, momentum=1.0, momentum_on="batch", layout=layout)
    rb = oracles.batch_norm_training(x, None, None, np.zeros(3), np.ones(3), running_var_estimator="biased", **kw)
    ru = oracles.batch_norm_training(x, None, None, np.zeros(3), np.ones(3), running_var_estimator="unbiased", **kw)
    assert_f64_close(rb.running_var, var_b, var_b, n, "biased running var")
    assert_f64_close(ru.running_var, var_u, var_u, n, "unbiased running var")
    ratio = ru.running_var / rb.running_var
    assert np.all(np.abs(ratio - EXT(12) / EXT(11)) <= 4 * U * ratio)
    assert_bits(rb.y, ru.y, "y independent of the running-variance estimator")


def test_cumulative_average_momentum_none():
    """momentum=None: K steps from zero statistics give the plain average of the K batch
    statistics; num_batches_tracked = t weights the batch by 1/(t+1)."""
    rng = np.random.default_rng(4)
    k, c = 5, 3
    xs = rng.standard_normal((k, 4, c, 3)) * 2 + rng.standard_normal((k, 1, c, 1)) * 3
    steps = oracles.batch_norm_training_steps(xs, None, None, np.zeros(c), np.zeros(c), eps=1e-5,
                                              momentum=None, running_var_estimator="unbiased")
    per_step = [_bn_batch_stats_f64(xs[j]) for j in range(k)]
    n = per_step[0][3]
    for j in range(k):
        avg_m = np.mean([s[0] for s in per_step[: j + 1]], axis=0)
        avg_v = np.mean([s[2] for s in per_step[: j + 1]], axis=0)
        mag = np.abs(xs).max()
        assert_f64_close(steps[j].running_mean, avg_m, mag, n * k, f"running_mean after {j + 1} steps")
        assert_f64_close(steps[j].running_var, avg_v, mag**2 * 2, n * k, f"running_var after {j + 1} steps")
    # the starting statistics get weight 0 at num_batches_tracked = 0
    other = oracles.batch_norm_training_steps(xs, None, None, np.full(c, 7.0), np.full(c, 9.0), eps=1e-5,
                                              momentum=None)
    assert_bits(other[-1].running_mean, steps[-1].running_mean, "initial stats ignored at t=0")
    # resuming at num_batches_tracked = t: new = (t * old + batch) / (t + 1)
    old_m, old_v = np.array([1.0, -2.0, 0.5]), np.array([0.5, 2.0, 1.0])
    r = oracles.batch_norm_training(xs[0], None, None, old_m, old_v, eps=1e-5, momentum=None,
                                    num_batches_tracked=3, running_var_estimator="biased")
    mean, var_b, _, n = per_step[0]
    assert_f64_close(r.running_mean, (3 * old_m + mean) / 4, np.abs(old_m) + np.abs(xs[0]).max(), n, "t=3 mean")
    assert_f64_close(r.running_var, (3 * old_v + var_b) / 4, old_v + np.abs(xs[0]).max() ** 2 * 2, n, "t=3 var")


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 4), layout=st.sampled_from(["channels_first", "channels_last"]),
       momentum=st.sampled_from([0.1, 0.99, None, 0.0, 1.0]), momentum_on=st.sampled_from(["batch", "running"]),
       nbt=st.integers(0, 5), affine=st.booleans())
def test_training_steps_is_iterated_training(seed, k, layout, momentum, momentum_on, nbt, affine):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 4))
    shape = (2, c, 3) if layout == "channels_first" else (2, 3, c)
    xs = rng.standard_normal((k,) + shape)
    gamma, beta = (rng.standard_normal(c), rng.standard_normal(c)) if affine else (None, None)
    rm, rv = rng.standard_normal(c), rng.uniform(0.1, 2, c)
    kw = dict(eps=1e-3, momentum=momentum, momentum_on=momentum_on, layout=layout)
    steps = oracles.batch_norm_training_steps(xs, gamma, beta, rm, rv, num_batches_tracked=nbt, **kw)
    ev = oracles.evaluate("batch_norm", "training_steps",
                          {"xs": xs, "running_mean": rm, "running_var": rv,
                           **({"gamma": gamma, "beta": beta} if affine else {})},
                          {**kw, "num_batches_tracked": nbt}, "float32")
    m, v = rm, rv
    for j in range(k):
        one = oracles.batch_norm_training(xs[j], gamma, beta, m, v, num_batches_tracked=nbt + j, **kw)
        for name in ("y", "mean", "var", "rstd", "running_mean", "running_var"):
            assert_bits(getattr(steps[j], name), getattr(one, name), f"step {j} {name}")
        for name in ("y", "mean", "var", "running_mean", "running_var"):
            assert_bits(ev.outputs[name][j], getattr(one, name), f"evaluate step {j} {name}")
        e1 = oracles.evaluate("batch_norm", "training",
                              {"x": xs[j], "running_mean": m, "running_var": v,
                               **({"gamma": gamma, "beta": beta} if affine else {})},
                              {**kw, "num_batches_tracked": nbt + j}, "float32")
        assert_bits(e1.outputs["running_mean"], one.running_mean, f"evaluate training step {j}")
        m, v = one.running_mean, one.running_var


# --------------------------------------------------------------------------------------------------
# layouts: channels_last is the transposed channels_first computation (bit for bit)


def _to_last(a):
    return np.moveaxis(a, 1, -1)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), rank=st.integers(3, 5), op=st.sampled_from(["batch_norm", "group_norm",
                                                                                   "instance_norm"]))
def test_channels_last_is_transposed_channels_first(seed, rank, op):
    rng = np.random.default_rng(seed)
    c = 6
    shape = (2, c) + tuple(int(s) for s in rng.integers(1, 4, size=rank - 2))
    x = rng.standard_normal(shape) * 3 + 1
    dy, tx = rng.standard_normal(shape), rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    tg, tb = rng.standard_normal(c), rng.standard_normal(c)
    attrs = {"eps": 1e-5}
    if op == "batch_norm":
        rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
        modes = {"inference": {"running_mean": rm, "running_var": rv}, "training": {"running_mean": rm, "running_var": rv},
                 "training_vjp": {"dy": dy}, "training_jvp": {"tx": tx, "tgamma": tg, "tbeta": tb},
                 "inference_vjp": {"running_mean": rm, "running_var": rv, "dy": dy},
                 "inference_jvp": {"running_mean": rm, "running_var": rv, "tx": tx}}
    else:
        if op == "group_norm":
            attrs["num_groups"] = int(rng.choice([1, 2, 3, 6]))
        modes = {"forward": {}, "vjp": {"dy": dy}, "jvp": {"tx": tx, "tgamma": tg, "tbeta": tb}}
    for mode, extra in modes.items():
        first = oracles.evaluate(op, mode, {"x": x, "gamma": gamma, "beta": beta, **extra}, attrs, "float32")
        last_extra = {k: (_to_last(v) if v.shape == shape else v) for k, v in extra.items()}
        last = oracles.evaluate(op, mode, {"x": _to_last(x), "gamma": gamma, "beta": beta, **last_extra},
                                {**attrs, "layout": "channels_last"}, "float32")
        for name, out in first.outputs.items():
            conv = _to_last if out.shape == shape else (lambda a: a)
            assert_bits(last.outputs[name], conv(out), f"{op}/{mode} {name}")
            assert_bits(last.bounds[name], conv(first.bounds[name]), f"{op}/{mode} bound {name}")


# --------------------------------------------------------------------------------------------------
# LayerNorm's two spellings, GroupNorm's structure, InstanceNorm and LayerNorm as GroupNorm


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_layer_norm_axis_form(rank):
    rng = np.random.default_rng(10 + rank)
    x = rng.standard_normal((2, 3, 4, 5)[:rank]) * 2 + 1
    for k in range(1, rank + 1):
        norm = x.shape[rank - k:]
        gamma, beta = rng.standard_normal(norm), rng.standard_normal(norm)
        ref = oracles.layer_norm(x, gamma, beta, eps=1e-5, normalized_ndim=k)
        assert ref.mean.shape == x.shape[: rank - k]
        for axis in (rank - k, -k):
            r = oracles.layer_norm(x, gamma, beta, eps=1e-5, axis=axis)
            for name in ("y", "mean", "rstd"):
                assert_bits(getattr(r, name), getattr(ref, name), f"axis={axis} vs normalized_ndim={k} {name}")
        rr = oracles.rms_norm(x, gamma, eps=1e-5, normalized_ndim=k)
        for axis in (rank - k, -k):
            assert_bits(oracles.rms_norm(x, gamma, eps=1e-5, axis=axis).y, rr.y, f"rms axis={axis}")


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_norm_per_group_is_repeated_per_channel(groups, layout):
    rng = np.random.default_rng(20 + groups)
    c = 6
    x = rng.standard_normal((2, c, 3, 2)) * 2 - 1
    if layout == "channels_last":
        x = _to_last(x)
    gg, bg = rng.standard_normal(groups), rng.standard_normal(groups)
    gc, bc = np.repeat(gg, c // groups), np.repeat(bg, c // groups)  # block g covers channels g*C/G ...
    kw = dict(eps=1e-5, layout=layout)
    pg = oracles.group_norm(x, groups, gg, bg, affine="per_group", **kw)
    pc = oracles.group_norm(x, groups, gc, bc, affine="per_channel", **kw)
    for name in ("y", "mean", "rstd"):
        assert_bits(getattr(pg, name), getattr(pc, name), name)
    # gradients: the per-group parameter gradient is the per-channel one summed over each block
    dy = rng.standard_normal(x.shape)
    vg = oracles.group_norm_vjp(x, groups, gg, bg, dy, affine="per_group", **kw)
    vc = oracles.group_norm_vjp(x, groups, gc, bc, dy, affine="per_channel", **kw)
    assert_bits(vg["x"], vc["x"], "dx")
    for p in ("gamma", "beta"):
        summed = vc[p].reshape(groups, -1).sum(axis=1)
        assert_ext_close(vg[p], summed, ext_tol(x.size, np.abs(vc[p]).reshape(groups, -1).sum(axis=1) + 1), f"d{p}")


@pytest.mark.parametrize("groups", [2, 3])
def test_group_norm_groups_are_contiguous_blocks(groups):
    """Statistics over channels g*C/G ... (g+1)*C/G - 1 (manual reshape), not interleaved c % G."""
    rng = np.random.default_rng(30 + groups)
    n, c = 2, 6
    offsets = np.arange(c) ** 2 * 10.0  # channel means far apart and not in arithmetic progression
    x = rng.standard_normal((n, c, 4)) + offsets[None, :, None]
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    r = oracles.group_norm(x, groups, gamma, beta, eps=1e-5)
    xe = x.astype(EXT).reshape(n, groups, -1)  # contiguous blocks of C/G channels
    m = xe.mean(axis=2)
    var = ((xe - m[..., None]) ** 2).mean(axis=2)
    rstd = 1 / np.sqrt(var + EXT(1e-5))
    big = np.abs(xe).max(axis=2)
    assert_ext_close(r.mean, m, ext_tol(xe.shape[2], big), "group mean")
    assert_ext_close(r.rstd, rstd, ext_tol(xe.shape[2], rstd * big * rstd), "group rstd")
    xhat = ((xe - m[..., None]) * rstd[..., None]).reshape(x.shape)
    y = xhat * gamma[None, :, None] + beta[None, :, None]
    mag = (np.abs(xhat) + big.repeat(c // groups, axis=1).reshape(n, c, 1) * rstd.repeat(c // groups, axis=1)
           .reshape(n, c, 1)) * np.abs(gamma)[None, :, None] + np.abs(beta)[None, :, None]
    assert_ext_close(r.y, y, ext_tol(xe.shape[2], mag), "group y")
    inter = x.astype(EXT).reshape(n, c // groups, groups, 4).mean(axis=(1, 3))  # channel c in group c % G
    assert np.all(np.abs(r.mean - inter) > 1), "interleaved grouping would give the same means"


def _assert_norm_results_close(a, b, n, names, what):
    for name in names:
        av, bv = getattr(a, name), getattr(b, name)
        assert_ext_close(av, bv.reshape(av.shape), ext_tol(n, np.abs(bv).reshape(av.shape) + 1), f"{what} {name}")


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_instance_norm_is_group_norm_with_c_groups(layout):
    rng = np.random.default_rng(40)
    c = 4
    x = rng.standard_normal((3, c, 3, 5)) * 2 + 0.5
    if layout == "channels_last":
        x = _to_last(x)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    a = oracles.instance_norm(x, gamma, beta, eps=1e-3, layout=layout)
    b = oracles.group_norm(x, c, gamma, beta, eps=1e-3, layout=layout)
    _assert_norm_results_close(a, b, 15, ("y", "mean", "rstd"), "instance vs group(C)")
    dy = rng.standard_normal(x.shape)
    ga = oracles.instance_norm_vjp(x, gamma, beta, dy, eps=1e-3, layout=layout)
    gb = oracles.group_norm_vjp(x, c, gamma, beta, dy, eps=1e-3, layout=layout)
    for k in ga:
        assert_ext_close(ga[k], gb[k], ext_tol(15 * 3, np.abs(gb[k]) + 10), f"vjp {k}")


def test_layer_norm_flat_is_group_norm_with_one_group():
    rng = np.random.default_rng(41)
    x = rng.standard_normal((3, 4, 2, 5)) * 3 - 2
    a = oracles.layer_norm(x.reshape(3, -1), eps=1e-5, normalized_ndim=1)
    b = oracles.group_norm(x, 1, eps=1e-5)
    assert_ext_close(a.y.reshape(x.shape), b.y, ext_tol(40, np.abs(b.y) + 1), "y")
    assert_ext_close(a.mean, b.mean[:, 0], ext_tol(40, np.abs(x).max()), "mean")
    assert_ext_close(a.rstd, b.rstd[:, 0], ext_tol(40, b.rstd[:, 0] * np.abs(x).max()), "rstd")
    # also LayerNorm over the trailing 3 dims of the unflattened tensor
    c = oracles.layer_norm(x, eps=1e-5, normalized_ndim=3)
    assert_ext_close(c.y, b.y, ext_tol(40, np.abs(b.y) + 1), "y (normalized_ndim=3)")


# --------------------------------------------------------------------------------------------------
# formulas: RMSNorm, MVN, L2 normalization, weight norm


def test_rms_norm_does_not_center():
    rng = np.random.default_rng(50)
    x = rng.standard_normal((4, 8)) + 5.0  # mean far from 0
    w = rng.standard_normal(8)
    eps = 1e-6
    r = oracles.rms_norm(x, w, eps=eps, normalized_ndim=1)
    xe = x.astype(EXT)
    rstd = 1 / np.sqrt(np.mean(xe * xe, axis=1) + EXT(eps))
    assert_ext_close(r.rstd, rstd, ext_tol(8, rstd), "rstd = 1/sqrt(mean(x^2) + eps)")
    assert_ext_close(r.y, w * xe * rstd[:, None], ext_tol(8, w * xe * rstd[:, None]), "y = w x rstd")
    ln = oracles.layer_norm(x, w, None, eps=eps, normalized_ndim=1)
    assert np.all(np.abs(ln.y - r.y).max(axis=1) > 0.1), "rms_norm subtracts the mean"
    # on centered data the two coincide
    xc = x - x.mean(axis=1, keepdims=True)
    xc = xc - xc.mean(axis=1, keepdims=True)
    rc, lc = oracles.rms_norm(xc, w, eps=eps, normalized_ndim=1), oracles.layer_norm(xc, w, None, eps=eps, normalized_ndim=1)
    assert_ext_close(rc.y, lc.y, EXT(1e-12) * (np.abs(lc.y) + 1), "rms == layer on centered data")


@pytest.mark.parametrize("axes", [(0, 2, 3), (1,), (2, 3), (-1,)])
def test_mvn_eps_modes(axes):
    rng = np.random.default_rng(60)
    x = rng.standard_normal((2, 3, 4, 2)) * 0.3 + 1
    eps = 0.25  # large enough to separate the conventions
    xe = x.astype(EXT)
    m = xe.mean(axis=axes, keepdims=True)
    var = ((xe - m) ** 2).mean(axis=axes, keepdims=True)
    n = int(np.prod([x.shape[a] for a in axes]))
    expect = {"inside": (xe - m) / np.sqrt(var + EXT(eps)),
              "outside": (xe - m) / (np.sqrt(var) + EXT(eps)),
              "none": (xe - m) / np.sqrt(var)}
    got = {}
    for mode, y in expect.items():
        got[mode] = oracles.mean_variance_normalization(x, axes=axes, eps=eps, eps_mode=mode)
        assert_ext_close(got[mode], y, ext_tol(n, np.abs(y) + np.abs(xe) / np.sqrt(var)), f"mvn {mode}")
    assert np.abs(got["inside"] - got["outside"]).max() > 0.01
    # ONNX defaults: axes (0, 2, 3), eps 1e-9 outside the root
    e = oracles.evaluate("mvn", "forward", {"x": x}, {}, "float32")
    assert_bits(e.outputs["y"], oracles.mean_variance_normalization(x, axes=(0, 2, 3), eps=1e-9,
                                                                      eps_mode="outside"), "mvn defaults")


@pytest.mark.parametrize("k", [-3, -1, 0, 2])
def test_l2_normalize_eps_modes_around_the_floor(k):
    """x = (3, 4) * 2**k has norm 5 * 2**k and sum of squares 25 * 4**k; with eps = 0.5 the floor
    of max_norm is at norm 0.5 and that of max_sumsq at norm sqrt(0.5): k = -3 (norm 0.625) lies
    between them, k = -1 (2.5) above both, k = 0/2 far above; a fifth case below both is separate."""
    eps = 0.5
    x = np.array([[3.0, 4.0]]) * 2.0**k
    xe = x.astype(EXT)
    norm, s = EXT(5) * EXT(2) ** k, EXT(25) * EXT(4) ** k
    expect = {"none": xe / norm,
              "inside": xe / np.sqrt(s + EXT(eps)),
              "max_norm": xe / max(norm, EXT(eps)),
              "max_sumsq": xe / np.sqrt(max(s, EXT(eps)))}
    for mode, y in expect.items():
        got = oracles.l2_normalize(x, axes=(-1,), eps=eps, eps_mode=mode)
        assert_ext_close(got, y, 4 * U * np.abs(y), f"l2 {mode} at norm {float(norm)}")
    if k == -3:  # between the floors: max_norm is unfloored, max_sumsq floored
        assert_bits(oracles.l2_normalize(x, eps=eps, eps_mode="max_norm"), xe / norm, "max_norm above its floor")
        assert_ext_close(oracles.l2_normalize(x, eps=eps, eps_mode="max_sumsq"), xe / np.sqrt(EXT(eps)),
                         4 * U * np.abs(xe), "max_sumsq at its floor")


def test_l2_normalize_below_both_floors():
    x = np.array([[3.0, 4.0], [0.0, 0.0]]) * 2.0**-6  # norm 5/64 (and a zero row)
    eps = 0.5
    xe = x.astype(EXT)
    assert_bits(oracles.l2_normalize(x, eps=eps, eps_mode="max_norm"), xe / EXT(eps), "max_norm floored: x / eps")
    assert_ext_close(oracles.l2_normalize(x, eps=eps, eps_mode="max_sumsq"), xe / np.sqrt(EXT(eps)),
                     4 * U * np.abs(xe), "max_sumsq floored: x / sqrt(eps)")
    y = oracles.l2_normalize(x, eps=eps, eps_mode="none")
    assert np.all(np.isnan(y[1])), "0/0 without eps is NaN"
    # defaults: torch.nn.functional.normalize (max_norm, eps 1e-12) over the last axis
    assert_bits(oracles.evaluate("l2_normalize", "forward", {"x": x}, {}, "float32").outputs["y"],
                oracles.l2_normalize(x, axes=(-1,), eps=1e-12, eps_mode="max_norm"), "l2 defaults")


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5)])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_weight_norm_rows_and_columns(shape, dim):
    rng = np.random.default_rng(70)
    v = rng.standard_normal(shape) * 2
    d = dim % len(shape)
    g = rng.standard_normal(shape[d])
    w = oracles.weight_norm(v, g, dim=dim)
    axes = tuple(a for a in range(len(shape)) if a != d)
    ve = v.astype(EXT)
    norm = np.sqrt(np.sum(ve * ve, axis=axes, keepdims=True))
    gshape = [1] * len(shape)
    gshape[d] = -1
    expect = g.astype(EXT).reshape(gshape) * ve / norm
    assert_ext_close(w, expect, ext_tol(v.size, expect), f"w = g v / ||v|| (dim={dim})")
    if len(shape) == 2 and d == 0:  # row-wise, spelled out
        for i in range(shape[0]):
            row = g[i] * ve[i] / np.sqrt(np.sum(ve[i] ** 2))
            assert_ext_close(w[i], row, ext_tol(shape[1], row), f"row {i}")
    if len(shape) == 2 and d == 1:  # column-wise
        for j in range(shape[1]):
            col = g[j] * ve[:, j] / np.sqrt(np.sum(ve[:, j] ** 2))
            assert_ext_close(w[:, j], col, ext_tol(shape[0], col), f"column {j}")
    # g of shape (out, 1, ..., 1) is the same parameter
    assert_bits(oracles.weight_norm(v, g.reshape(gshape), dim=dim), w, "g as a broadcast-shaped array")
    # each slice along dim has norm |g|
    assert_ext_close(np.sqrt(np.sum(w * w, axis=axes)), np.abs(g).astype(EXT),
                     ext_tol(v.size, np.abs(g)), "||w_i|| = |g_i|")
