"""Each variant computes what its `wrong` sentence says: independent closed forms (numpy, extended
precision), gradients consistent with the buggy forward, and exact agreement with the oracle where
the bug vanishes (Hypothesis over seeds and sizes)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import oracles
from bugzoo import VARIANTS, examples, variant
from bugzoo._formats import low_precision_stats, one_pass_stats, round_bf16, sequential_sum
from oracles.dtypes import EXT, round_to

NIGHTLY = os.environ.get("NORMFUZZ_NIGHTLY") == "1"
EXAMPLES = 300 if NIGHTLY else 25

E = lambda a: np.asarray(a, dtype=EXT)  # noqa: E731


def impl(v, mode, inputs, attrs, dtype=None):
    """The variant's outputs in EXT (before rounding to a format)."""
    return v.impl(mode, inputs, attrs, dtype, None)


def _close(a, b, rtol=1e-15):
    a, b = E(a), E(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=1e-300)


def _moments(x, axes):
    m = np.mean(E(x), axis=axes, keepdims=True)
    return m, np.mean((E(x) - m) ** 2, axis=axes, keepdims=True)


# --------------------------------------------------------------------------------------------------
# closed forms


def test_eps_outside_sqrt_layer_norm_closed_form():
    rng = np.random.default_rng(1)
    x, g, b = rng.standard_normal((3, 4, 5)), rng.uniform(0.5, 1.5, (4, 5)), rng.uniform(-1, 1, (4, 5))
    eps = 0.05
    out = impl(variant("eps_outside_sqrt", "layer_norm"), "forward", {"x": x, "gamma": g, "beta": b},
               {"eps": eps, "normalized_ndim": 2})
    m, var = _moments(x, (1, 2))
    _close(out["y"], (E(x) - m) / (np.sqrt(var) + eps) * E(g) + E(b))
    _close(out["rstd"], 1 / (np.sqrt(var[:, 0, 0]) + eps))


def test_eps_outside_sqrt_batch_norm_inference_closed_form():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5))
    rm, rv = rng.standard_normal(3), rng.uniform(0.1, 2, 3)
    out = impl(variant("eps_outside_sqrt", "batch_norm"), "inference",
               {"x": x, "running_mean": rm, "running_var": rv}, {"eps": 0.1})
    _close(out["y"], (E(x) - E(rm)[:, None]) / (np.sqrt(E(rv))[:, None] + EXT(0.1)))


@pytest.mark.parametrize("name,eff", [("eps_dropped", lambda e: 0.0), ("eps_squared", lambda e: e * e)])
def test_eps_dropped_and_squared_closed_form(name, eff):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 5)) * 0.1
    eps = 0.02
    out = impl(variant(name, "group_norm"), "forward", {"x": x}, {"eps": eps, "num_groups": 3})
    xg = E(x).reshape(2, 3, 10)
    m, var = _moments(xg, (2,))
    _close(out["y"], ((xg - m) / np.sqrt(var + EXT(eff(eps)))).reshape(2, 6, 5))


def _bn_ref_training(x, rm, rv, eps, m_w, factor):
    xs = np.moveaxis(E(x), 1, 0).reshape(x.shape[1], -1)
    mean, var = xs.mean(axis=1), xs.var(axis=1)
    return mean, var, (1 - m_w) * E(rm) + m_w * mean, (1 - m_w) * E(rv) + m_w * var * factor


def test_training_uses_running_stats_closed_form():
    rng = np.random.default_rng(4)
    x, rm, rv = rng.standard_normal((4, 3, 5)) * 2 + 1, rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    out = impl(variant("training_uses_running_stats", "batch_norm"), "training",
               {"x": x, "running_mean": rm, "running_var": rv}, {"eps": 1e-3})
    mean, var, nrm, nrv = _bn_ref_training(x, rm, rv, 1e-3, EXT("0.1"), EXT(20) / 19)
    _close(out["y"], (E(x) - E(rm)[:, None]) / np.sqrt(E(rv)[:, None] + EXT(1e-3)))
    _close(out["mean"], mean)
    _close(out["var"], var, rtol=1e-14)
    _close(out["running_mean"], nrm, rtol=1e-14)
    _close(out["running_var"], nrv, rtol=1e-14)


def test_running_stats_not_updated_returns_them_unchanged():
    rng = np.random.default_rng(5)
    x, rm, rv = rng.standard_normal((2, 4, 3, 2)), rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    v = variant("running_stats_not_updated", "batch_norm")
    out = impl(v, "training_steps", {"xs": x, "running_mean": rm, "running_var": rv}, {"eps": 1e-5})
    assert np.array_equal(out["running_mean"], np.stack([E(rm)] * 2))
    assert np.array_equal(out["running_var"], np.stack([E(rv)] * 2))
    right = oracles.evaluate("batch_norm", "training_steps", {"xs": x, "running_mean": rm, "running_var": rv},
                             {"eps": 1e-5}, "float64").outputs
    assert np.array_equal(out["y"], right["y"])


def test_batch_stats_at_inference_closed_form():
    rng = np.random.default_rng(6)
    x, rm, rv = rng.standard_normal((4, 3, 5)) + 3, np.zeros(3), np.ones(3)
    out = impl(variant("batch_stats_at_inference", "batch_norm"), "inference",
               {"x": x, "running_mean": rm, "running_var": rv}, {"eps": 1e-5})
    m, var = _moments(x, (0, 2))
    _close(out["y"], (E(x) - m) / np.sqrt(var + EXT(1e-5)), rtol=1e-14)


def test_unbiased_variance_normalizes_closed_form():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4))
    out = impl(variant("unbiased_variance_normalizes", "layer_norm"), "forward", {"x": x},
               {"eps": 1e-5, "normalized_ndim": 1})
    m, var = _moments(x, (1,))
    _close(out["y"], (E(x) - m) / np.sqrt(var * EXT(4) / 3 + EXT(1e-5)), rtol=1e-14)
    # BatchNorm: batch statistics unbiased, running statistics those of the correct op
    v = variant("unbiased_variance_normalizes", "batch_norm")
    xb, rm, rv = rng.standard_normal((2, 3, 2)), np.zeros(3), np.ones(3)
    inputs = {"x": xb, "running_mean": rm, "running_var": rv}
    out = impl(v, "training", inputs, {"eps": 1e-5})
    right = oracles.evaluate("batch_norm", "training", inputs, {"eps": 1e-5}, "float64").outputs
    _close(out["var"], right["var"] * EXT(4) / 3, rtol=1e-14)
    assert np.array_equal(out["running_var"], right["running_var"])


def test_estimator_swapped_and_momentum_inverted_closed_form():
    rng = np.random.default_rng(8)
    x, rm, rv = rng.standard_normal((2, 3, 2)) * 3 + 2, np.zeros(3), np.ones(3)
    inputs = {"x": x, "running_mean": rm, "running_var": rv}
    m = 0.25
    mean, var, _, _ = _bn_ref_training(x, rm, rv, 1e-5, EXT(m), 1)
    out = impl(variant("running_var_estimator_swapped", "batch_norm"), "training", inputs,
               {"eps": 1e-5, "momentum": m})  # case: unbiased; variant: biased
    _close(out["running_var"], (1 - EXT(m)) * E(rv) + EXT(m) * var, rtol=1e-14)
    out = impl(variant("momentum_inverted", "batch_norm"), "training", inputs,
               {"eps": 1e-5, "momentum": m})  # case: m weighs the batch; variant: 1 - m does
    _close(out["running_mean"], EXT(m) * E(rm) + (1 - EXT(m)) * mean, rtol=1e-14)
    _close(out["running_var"], EXT(m) * E(rv) + (1 - EXT(m)) * var * EXT(4) / 3, rtol=1e-14)


def test_estimator_swapped_at_n_1_gives_nan_running_var():
    v = variant("running_var_estimator_swapped", "batch_norm")
    inputs = {"x": np.ones((1, 2)), "running_mean": np.zeros(2), "running_var": np.ones(2)}
    out = impl(v, "training", inputs, {"eps": 1e-5, "running_var_estimator": "biased"})
    assert np.all(np.isnan(out["running_var"]))


def test_group_norm_interleaved_closed_form():
    rng = np.random.default_rng(9)
    for layout in ("channels_first", "channels_last"):
        x = rng.standard_normal((2, 6, 5)) + np.arange(6)[None, :, None]
        g, b = rng.uniform(0.5, 1.5, 6), rng.uniform(-1, 1, 6)
        xin = x if layout == "channels_first" else np.moveaxis(x, 1, -1)
        out = impl(variant("group_norm_interleaved", "group_norm"), "forward",
                   {"x": xin, "gamma": g, "beta": b}, {"eps": 1e-5, "num_groups": 3, "layout": layout})
        want = np.empty(x.shape, dtype=EXT)
        mean = np.empty((2, 3), dtype=EXT)
        for grp in range(3):
            ch = [c for c in range(6) if c % 3 == grp]
            m, var = _moments(x[:, ch], (1, 2))
            want[:, ch] = (E(x[:, ch]) - m) / np.sqrt(var + EXT(1e-5)) * E(g[ch])[None, :, None] + E(b[ch])[None, :, None]
            mean[:, grp] = m[:, 0, 0]
        got = out["y"] if layout == "channels_first" else np.moveaxis(out["y"], -1, 1)
        _close(got, want, rtol=1e-14)
        _close(out["mean"], mean, rtol=1e-14)


def test_layer_norm_last_axis_only_closed_form():
    rng = np.random.default_rng(10)
    x, g, b = rng.standard_normal((3, 4, 5)), rng.uniform(0.5, 1.5, (4, 5)), rng.uniform(-1, 1, (4, 5))
    v = variant("layer_norm_last_axis_only", "layer_norm")
    out = impl(v, "forward", {"x": x, "gamma": g, "beta": b}, {"eps": 1e-5, "normalized_ndim": 2})
    m, var = _moments(x, (2,))
    _close(out["y"], (E(x) - m) / np.sqrt(var + EXT(1e-5)) * E(g) + E(b), rtol=1e-14)
    assert "mean" in v.omitted_outputs and "rstd" in v.omitted_outputs
    assert set(v.evaluate("forward", {"x": x}, {"eps": 1e-5, "normalized_ndim": 2}, "float64")) == {"y"}


def test_rms_norm_subtracts_mean_closed_form():
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((3, 8)) + 1, rng.uniform(0.5, 1.5, 8)
    out = impl(variant("rms_norm_subtracts_mean", "rms_norm"), "forward", {"x": x, "weight": w},
               {"eps": 1e-5, "normalized_ndim": 1})
    m, var = _moments(x, (1,))
    _close(out["y"], (E(x) - m) / np.sqrt(var + EXT(1e-5)) * E(w), rtol=1e-14)


def test_l2_variants_closed_form():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 8)) * 0.05
    nrm = np.sqrt(np.sum(E(x) ** 2, axis=-1, keepdims=True))
    out = impl(variant("l2_eps_added_to_norm", "l2_normalize"), "forward", {"x": x}, {"eps": 0.1})
    _close(out["y"], E(x) / (nrm + EXT(0.1)), rtol=1e-14)
    out = impl(variant("l2_eps_convention_swapped", "l2_normalize"), "forward", {"x": x},
               {"eps": 0.01, "eps_mode": "max_norm"})
    _close(out["y"], E(x) / np.sqrt(np.maximum(nrm ** 2, EXT(0.01))), rtol=1e-14)
    out = impl(variant("eps_dropped", "l2_normalize"), "forward", {"x": np.zeros((1, 4))}, {"eps": 1e-12})
    assert np.all(np.isnan(out["y"]))  # 0/0 where the correct op gives 0


def test_weight_norm_wrong_dim_closed_form():
    rng = np.random.default_rng(13)
    vv, g = rng.standard_normal((4, 6)), rng.uniform(0.5, 1.5, 4)
    v = variant("weight_norm_wrong_dim", "weight_norm")
    out = impl(v, "forward", {"v": vv, "g": g}, {"dim": 0})
    col = np.sqrt(np.sum(E(vv) ** 2, axis=0, keepdims=True))
    _close(out["w"], E(g)[:, None] * E(vv) / col, rtol=1e-14)
    # a vector: the variant divides by the vector's norm, the correct op by |v_i|
    out = impl(v, "forward", {"v": vv[0], "g": g[:1].repeat(6)}, {"dim": 0})
    _close(out["w"], E(g[0]) * E(vv[0]) / np.sqrt(np.sum(E(vv[0]) ** 2)), rtol=1e-14)


def test_nan_spreads_to_every_output():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 3, 5))
    x[0, 1, 0] = np.nan
    inputs = {"x": x, "running_mean": np.zeros(3), "running_var": np.ones(3)}
    v = variant("nan_spreads", "batch_norm")
    out = impl(v, "training", inputs, {"eps": 1e-5})
    assert all(np.all(np.isnan(a)) for a in out.values())
    right = oracles.evaluate("batch_norm", "training", inputs, {"eps": 1e-5}, "float64").outputs
    assert np.all(np.isfinite(right["y"][:, [0, 2]]))  # the correct op keeps the other channels


# --------------------------------------------------------------------------------------------------
# finite precision


def test_sequential_sum_matches_a_scalar_loop():
    rng = np.random.default_rng(15)
    a = rng.uniform(0, 4, (3, 700))
    for fmt in ("float16", "bfloat16"):
        a_f = round_to(fmt, a).astype(np.float64)
        got = sequential_sum(a_f, fmt)
        for row in range(3):
            acc = 0.0
            for t in a_f[row]:
                if fmt == "float16":  # numpy's scalar float16 addition rounds to float16
                    acc = float(np.float16(acc) + np.float16(t))
                else:  # the float32 sum of two bfloat16 values is exact; round it once
                    acc = float(round_to("bfloat16", np.array([acc + t], dtype=np.float32))[0])
            assert float(got[row]) == acc
    # stagnation: 4096 ones sum to 2048 in float16 and to 256 in bfloat16
    assert float(sequential_sum(np.ones(4096), "float16")) == 2048.0
    assert float(sequential_sum(np.ones(4096), "bfloat16")) == 256.0


def test_round_bf16_matches_the_oracle_rounding():
    rng = np.random.default_rng(16)
    a = (rng.standard_normal(20000) * np.exp(rng.uniform(-80, 80, 20000))).astype(np.float32)
    assert np.array_equal(round_bf16(a.astype(np.float64)), round_to("bfloat16", a).astype(np.float64))


def test_low_precision_layer_norm_of_ones_float16():
    # 4096 ones: the float16 sum stagnates at 2048 (2048 + 1 ties back to 2048), so the buggy mean
    # is 0.5 where the correct one is 1. Then d = 0.5, d*d = 0.25, and the sum of 4096 quarters
    # stagnates at 512 (512 + 0.25 ties back to 512): var = 512/4096 = 0.125, and the constant row
    # normalizes to 0.5/sqrt(0.125) = sqrt(2) instead of 0.
    v = variant("low_precision_accumulation", "layer_norm")
    x = np.ones((1, 4096), dtype=np.float16)
    out = impl(v, "forward", {"x": x}, {"eps": 0.0, "normalized_ndim": 1}, "float16")
    assert float(out["mean"][0]) == 0.5
    assert float(out["rstd"][0]) == float(1 / np.sqrt(EXT(0.125)))
    np.testing.assert_allclose(out["y"].astype(float), np.sqrt(2.0), rtol=1e-15)


def test_low_precision_rms_norm_overflows_in_float16():
    v = variant("low_precision_accumulation", "rms_norm")
    x = np.full((1, 4), 300.0, dtype=np.float16)  # 300**2 = 90000 > 65504
    out = impl(v, "forward", {"x": x}, {"eps": 1e-6, "normalized_ndim": 1}, "float16")
    assert np.all(out["y"] == 0)  # x * 1/sqrt(inf)
    stats = low_precision_stats("float16")
    assert np.isinf(stats(E(x), oracles.registry.OPS["rms_norm"].make_view({"x": x}, {"normalized_ndim": 1}).norm)[1]).all()


def test_one_pass_clamped_is_the_unclamped_clamped():
    ex = examples(variant("one_pass_variance", "batch_norm"), "training", "float32")
    a = impl(variant("one_pass_variance", "batch_norm"), "training", ex.inputs, ex.attrs, "float32")
    b = impl(variant("one_pass_variance_clamped", "batch_norm"), "training", ex.inputs, ex.attrs, "float32")
    assert np.array_equal(b["var"], np.maximum(a["var"], 0))
    right = oracles.evaluate("batch_norm", "training", ex.inputs, ex.attrs, "float32").outputs
    assert np.all(np.abs(a["var"] - right["var"]) > 1e-3 * right["var"])  # cancellation is real


def test_one_pass_is_exact_on_exact_data():
    # small integers: every sum, square and product is exact in float32, so one pass is harmless
    x = np.array([[1.0, -2.0, 3.0, -1.0, 2.0, -3.0, 0.0, 4.0]])
    stats = one_pass_stats("float32", clamp=False)
    norm = oracles.registry.OPS["layer_norm"].make_view({"x": x}, {"normalized_ndim": 1}).norm
    m, var = stats(E(x), norm)
    m0, v0 = _moments(x, (1,))
    assert np.array_equal(m, m0) and np.array_equal(var, v0)


# --------------------------------------------------------------------------------------------------
# gradients are those of the buggy forward


GRAD_PAIRS = {"vjp": ("forward", "jvp"), "inference_vjp": ("inference", "inference_jvp"),
              "training_vjp": ("training", "training_jvp")}


def _grad_cases():
    out = []
    for v in VARIANTS:
        for vjp, (fwd, jvp) in GRAD_PAIRS.items():
            if vjp in v.modes and jvp in v.modes and fwd in v.modes and "float64" in v.dtypes:
                out.append((v, fwd, vjp, jvp))
    return out


@pytest.mark.parametrize("case", _grad_cases(), ids=lambda c: f"{c[0].name}-{c[0].op}-{c[1]}")
def test_gradients_match_the_buggy_forward(case):
    v, fwd, vjp, jvp = case
    d = oracles.registry.OPS[v.op]
    # the bug present (a finite case for nan_spreads, whose NaN case has no derivative)
    ex = examples(v, jvp, "float64", seed=3, inside=v.name != "nan_spreads")
    base = {k: E(a) for k, a in ex.inputs.items()}
    tangents = {k: a for k, a in base.items() if k.startswith("t") and k[1:] in base}
    primal = {k: a for k, a in base.items() if k not in tangents}
    y = "y" if v.op == "batch_norm" else d.y_name
    # JVP against central differences of the variant's own forward (EXT, h = 2**-20)
    h = EXT(2.0 ** -20)
    plus = {k: a + h * tangents.get("t" + k, 0) for k, a in primal.items()}
    minus = {k: a - h * tangents.get("t" + k, 0) for k, a in primal.items()}
    fd = (impl(v, fwd, plus, ex.attrs)[y] - impl(v, fwd, minus, ex.attrs)[y]) / (2 * h)
    ty = impl(v, jvp, base, ex.attrs)["t" + y]
    np.testing.assert_allclose(ty.astype(float), fd.astype(float), rtol=1e-8, atol=1e-9)
    # VJP adjoint to the JVP: <dy, J t> = <J^T dy, t>
    rng = np.random.default_rng(4)
    dy_name = "dy" if v.op == "batch_norm" else "d" + d.y_name
    dy = E(rng.standard_normal(ty.shape))
    g = impl(v, vjp, {**primal, dy_name: dy}, ex.attrs)
    lhs = np.sum(dy * ty)
    rhs = sum(np.sum(g["d" + k[1:]] * t) for k, t in tangents.items())
    assert abs(float(lhs - rhs)) <= 1e-12 * (1 + abs(float(lhs)))


def test_every_gradient_variant_is_checked():
    grads = {(v.name, v.op) for v in VARIANTS if any(m.endswith(("vjp", "jvp")) for m in v.modes)}
    checked = {(c[0].name, c[0].op) for c in _grad_cases()}
    assert grads == checked


# --------------------------------------------------------------------------------------------------
# where the bug vanishes, the variant is the oracle (Hypothesis over seeds and sizes)


def _same(v, mode, inputs, attrs):
    got = impl(v, mode, inputs, attrs)
    want = oracles.evaluate(v.op, mode, inputs, attrs, "float64").outputs
    for k, a in got.items():
        np.testing.assert_allclose(a.astype(float), want[k].astype(float), rtol=1e-15, atol=0, err_msg=k)


@settings(derandomize=True, max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), c=st.integers(1, 4), length=st.integers(2, 6),
       name=st.sampled_from(["eps_outside_sqrt", "eps_dropped", "eps_squared"]),
       op=st.sampled_from(["batch_norm", "layer_norm", "instance_norm", "rms_norm"]))
def test_eps_variants_vanish_with_eps_zero(seed, n, c, length, name, op):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, length)) + 0.5
    attrs = {"eps": 0.0}
    if op in ("layer_norm", "rms_norm"):
        attrs["normalized_ndim"] = 1
    if op == "batch_norm":
        _same(variant(name, op), "inference", {"x": x, "running_mean": rng.standard_normal(c),
                                               "running_var": rng.uniform(0.5, 2, c)}, attrs)
        if n * length > 1:
            _same(variant(name, op), "training", {"x": x}, attrs)
    else:
        _same(variant(name, op), "forward", {"x": x}, attrs)


@settings(derandomize=True, max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3), c=st.integers(1, 8), length=st.integers(1, 5),
       layout=st.sampled_from(["channels_first", "channels_last"]), trivial=st.booleans())
def test_group_norm_interleaved_vanishes_for_one_or_c_groups(seed, n, c, length, layout, trivial):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, length) if layout == "channels_first" else (n, length, c))
    inputs = {"x": x, "gamma": rng.uniform(0.5, 1.5, c), "beta": rng.standard_normal(c)}
    _same(variant("group_norm_interleaved", "group_norm"), "forward", inputs,
          {"eps": 1e-5, "num_groups": 1 if trivial else c, "layout": layout})


@settings(derandomize=True, max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.lists(st.integers(1, 5), min_size=1, max_size=3))
def test_structural_variants_vanish_in_their_degenerate_case(seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    last = shape[-1]
    # LayerNorm over one axis: last axis only is the same thing
    _same(variant("layer_norm_last_axis_only", "layer_norm"), "forward",
          {"x": x, "gamma": rng.uniform(0.5, 1.5, last)}, {"eps": 1e-5, "normalized_ndim": 1})
    # a finite input: NaN cannot spread
    _same(variant("nan_spreads", "layer_norm"), "forward", {"x": x}, {"eps": 1e-5, "normalized_ndim": 1})


@settings(derandomize=True, max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 6), momentum_on=st.sampled_from(["batch", "running"]))
def test_momentum_inverted_vanishes_at_one_half(seed, n, momentum_on):
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal((n, 2, 3)) * 2 + 1, "running_mean": rng.standard_normal(2),
              "running_var": rng.uniform(0.5, 2, 2)}
    _same(variant("momentum_inverted", "batch_norm"), "training", inputs,
          {"eps": 1e-5, "momentum": 0.5, "momentum_on": momentum_on})
