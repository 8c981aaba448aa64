"""The bug zoo: metadata, signatures, and each variant inside and outside its trigger regime.

Inside its trigger regime every variant must exceed the oracle's error bound (max error/bound ratio
> 1) in every format it applies to; outside it (where such a regime exists) it must agree (max ratio
<= 1). The example cases come from `bugzoo.examples` (seeded numpy, exactly representable in the
format); `python -m bugzoo` prints the ratios these tests assert on.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import bugzoo
import oracles
from bugzoo import NotApplicable, VARIANTS, examples, variant, variants_for
from bugzoo.examples import NO_OUTSIDE
from oracles.dtypes import DTYPES, round_to
from oracles.registry import OPS

PAPER_CRADLE = "CRADLE"
PAPER_LEMON = "LEMON"
DOC = "shared/reference/002_14d3f08b5ce94e7c.txt"

REQUIRED = {
    "eps_outside_sqrt", "eps_dropped", "eps_squared", "training_uses_running_stats",
    "running_stats_not_updated", "batch_stats_at_inference", "unbiased_variance_normalizes",
    "running_var_estimator_swapped", "momentum_inverted", "one_pass_variance",
    "one_pass_variance_clamped", "low_precision_accumulation", "nan_spreads",
    "group_norm_interleaved", "layer_norm_last_axis_only", "rms_norm_subtracts_mean",
}

CASES = [(v, mode, dtype) for v in VARIANTS for mode in v.modes for dtype in v.dtypes]


def _id(case):
    v, mode, dtype = case
    return f"{v.name}-{v.op}-{mode}-{dtype}"


def _ratios(v, mode, dtype, ex):
    ev = oracles.evaluate(v.op, mode, ex.inputs, ex.attrs, dtype)
    out = v.evaluate(mode, ex.inputs, ex.attrs, dtype)
    return ev, out, {k: float(np.max(r)) for k, r in ev.ratios(out, dtype).items() if r.size}


# --------------------------------------------------------------------------------------------------
# metadata


def test_required_variants_exist():
    names = {v.name for v in VARIANTS}
    assert REQUIRED <= names, sorted(REQUIRED - names)


def test_names_unique_per_op():
    keys = [(v.name, v.op) for v in VARIANTS]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("v", VARIANTS, ids=lambda v: f"{v.name}-{v.op}")
def test_metadata_complete(v):
    assert re.fullmatch(r"[a-z][a-z0-9_]*", v.name)
    assert re.fullmatch(r"[a-z][a-z0-9_]*", v.trigger_regime)
    assert v.op in OPS
    assert v.modes and set(v.modes) <= set(OPS[v.op].modes), v.modes
    assert v.mode == ", ".join(v.modes)
    assert v.dtypes and set(v.dtypes) <= set(DTYPES)
    for text in (v.wrong, v.trigger):
        assert isinstance(text, str) and len(text.split()) >= 5
    assert v.wrong.rstrip().endswith(".")  # one sentence
    assert v.references and all(isinstance(r, str) and r.strip() for r in v.references)
    assert v.oracle_fn in dir(oracles)
    assert set(v.omitted_outputs) <= {"mean", "rstd", "var"}


def test_references_name_the_papers_and_the_reference_document():
    for v in VARIANTS:
        refs = " ".join(v.references)
        if v.name.startswith("eps_"):
            assert PAPER_CRADLE in refs and DOC in refs and "wrongEpsilonOutsideSqrt" in refs, v
        if v.name in ("training_uses_running_stats", "running_stats_not_updated",
                      "batch_stats_at_inference", "running_var_estimator_swapped",
                      "momentum_inverted", "nan_spreads"):
            assert PAPER_LEMON in refs, v
        if v.name in ("training_uses_running_stats", "running_stats_not_updated",
                      "batch_stats_at_inference", "nan_spreads"):
            assert DOC in refs, v


def test_eps_variants_cover_every_eps_inside_op():
    for name in ("eps_outside_sqrt", "eps_dropped", "eps_squared"):
        ops = {v.op for v in VARIANTS if v.name == name}
        assert {"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"} <= ops


def test_every_oracle_mode_has_a_variant():
    for op, d in OPS.items():
        for mode in d.modes:
            assert variants_for(op, mode), (op, mode)


def test_variants_for_filters():
    for op, d in OPS.items():
        for mode in d.modes:
            got = variants_for(op, mode)
            assert got == [v for v in VARIANTS if v.op == op and mode in v.modes]
            for dtype in DTYPES:
                assert variants_for(op, mode, dtype) == [v for v in got if dtype in v.dtypes]
    assert variant("eps_outside_sqrt", "layer_norm").op == "layer_norm"
    with pytest.raises(KeyError):
        variant("eps_outside_sqrt", "weight_norm")


# --------------------------------------------------------------------------------------------------
# signatures of the buggy twins


@pytest.mark.parametrize("v", VARIANTS, ids=lambda v: f"{v.name}-{v.op}")
def test_fn_has_the_oracle_signature(v):
    for name, fn in v.fns:
        want = list(inspect.signature(getattr(oracles, name)).parameters.values())
        got = inspect.signature(fn).parameters
        assert "dtype" in got
        d = got["dtype"]
        assert d.kind is inspect.Parameter.KEYWORD_ONLY and d.default is None
        assert [p for k, p in got.items() if k != "dtype"] == want, name


def test_bn_twins_follow_the_modes():
    v = variant("eps_outside_sqrt", "batch_norm")
    assert [n for n, _ in v.fns] == ["batch_norm_inference", "batch_norm_training",
                                     "batch_norm_training_steps"]
    assert [n for n, _ in variant("batch_stats_at_inference", "batch_norm").fns] == ["batch_norm_inference"]
    assert [n for n, _ in variant("momentum_inverted", "batch_norm").fns] == [
        "batch_norm_training", "batch_norm_training_steps"]


def _typed_call(v, mode, ex, dtype):
    """Call the variant's typed twin for a forward-type case; returns {output name: EXT array}."""
    i, a = ex.inputs, dict(ex.attrs)
    fns = dict(v.fns)
    op = v.op
    if op == "batch_norm":
        p = {k: i.get(k) for k in ("gamma", "beta")}
        if mode == "inference":
            return {"y": fns["batch_norm_inference"](i["x"], i["running_mean"], i["running_var"],
                                                     **p, dtype=dtype, **a)}
        if mode == "training":
            r = fns["batch_norm_training"](i["x"], running_mean=i.get("running_mean"),
                                           running_var=i.get("running_var"), **p, dtype=dtype, **a)
            out = {"y": r.y, "mean": r.mean, "var": r.var, "rstd": r.rstd}
            if r.running_mean is not None:
                out.update(running_mean=r.running_mean, running_var=r.running_var)
            return out
        steps = fns["batch_norm_training_steps"](i["xs"], running_mean=i["running_mean"],
                                                  running_var=i["running_var"], **p, dtype=dtype, **a)
        return {k: np.stack([getattr(s, k) for s in steps])
                for k in ("y", "mean", "var", "running_mean", "running_var")}
    if op in ("layer_norm", "instance_norm"):
        r = v.fn(i["x"], i.get("gamma"), i.get("beta"), dtype=dtype, **a)
        return {"y": r.y, "mean": r.mean, "rstd": r.rstd}
    if op == "group_norm":
        a = dict(a)
        g = a.pop("num_groups")
        r = v.fn(i["x"], g, i.get("gamma"), i.get("beta"), dtype=dtype, **a)
        return {"y": r.y, "mean": r.mean, "rstd": r.rstd}
    if op == "rms_norm":
        r = v.fn(i["x"], i.get("weight"), dtype=dtype, **a)
        return {"y": r.y, "rstd": r.rstd}
    if op == "weight_norm":
        return {"w": v.fn(i["v"], i["g"], dtype=dtype, **a)}
    return {"y": v.fn(i["x"], dtype=dtype, **a)}


FORWARD_CASES = [c for c in CASES if c[1] in ("forward", "inference", "training", "training_steps")]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=_id)
def test_typed_twin_matches_evaluate(case):
    v, mode, dtype = case
    ex = examples(v, mode, dtype)
    want = v.evaluate(mode, ex.inputs, ex.attrs, dtype)
    got = _typed_call(v, mode, ex, dtype)
    for k, arr in want.items():
        g = np.asarray(got[k])
        assert g.shape == arr.shape, k
        np.testing.assert_array_equal(round_to(dtype, g), arr, err_msg=k)


def test_format_variants_need_a_dtype():
    v = variant("low_precision_accumulation", "layer_norm")
    x = np.ones((2, 8), dtype=np.float16)
    with pytest.raises(NotApplicable):
        v.fn(x, eps=1e-5, normalized_ndim=1)
    r = v.fn(x, eps=1e-5, normalized_ndim=1, dtype="float16")
    assert r.y.dtype == oracles.EXT
    with pytest.raises(ValueError, match="own statistics"):
        v.fn(x, eps=1e-5, normalized_ndim=1, dtype="float16", _stats=lambda x, n: None)


# --------------------------------------------------------------------------------------------------
# inside / outside the trigger regime


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_inside_trigger_exceeds_bound(case):
    v, mode, dtype = case
    ex = examples(v, mode, dtype, inside=True)
    ev, out, worst = _ratios(v, mode, dtype, ex)
    # same names as the oracle (less what the variant cannot produce), in the case's format
    assert set(out) == set(ev.outputs) - set(v.omitted_outputs)
    for k, a in out.items():
        assert a.shape == ev.outputs[k].shape, k
        assert a.dtype == DTYPES[dtype].np_carrier, k
        np.testing.assert_array_equal(round_to(dtype, a), a)
    assert max(worst.values()) > 1, (ex.note, worst)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_outside_trigger_agrees(case):
    v, mode, dtype = case
    ex = examples(v, mode, dtype, inside=False)
    if ex is None:
        # no outside regime: only for the documented reasons
        assert v.name in NO_OUTSIDE
        if v.name in ("unbiased_variance_normalizes", "running_var_estimator_swapped"):
            assert dtype in ("float32", "float64")
        elif v.name != "weight_norm_wrong_dim":
            assert mode not in ("forward", "inference")
        return
    _, _, worst = _ratios(v, mode, dtype, ex)
    assert max(worst.values()) <= 1, (ex.note, worst)


def test_one_pass_leaves_out_bfloat16_for_a_reason():
    # bfloat16 data has at most 8 significant bits: |mean|/spread <= ~2**8, so E[x^2] - E[x]^2 in
    # float32 keeps >= 8 of 24 bits, as many as a bfloat16 output has. The worst attempt we know
    # (n = 64 values one ulp apart) stays inside the bound.
    v = variant("one_pass_variance", "layer_norm")
    assert "bfloat16" not in v.dtypes
    with pytest.raises(NotApplicable):
        v.evaluate("forward", {"x": np.ones((1, 8), np.float32)}, {"eps": 1e-5, "normalized_ndim": 1}, "bfloat16")
    # the float32 one-pass statistics on bfloat16 data, evaluated anyway, agree within the bound
    from bugzoo._formats import one_pass_stats

    rng = np.random.default_rng(0)
    worst = 0.0
    for m in (129.0, 200.0, 250.0, 255.0):
        for k in (1, 11, 21, 32, 43, 63):
            x = np.full((1, 64), m)
            x[0, :k] += 1.0
            x = round_to("bfloat16", rng.permuted(x, axis=1))
            attrs = {"eps": 1e-5, "normalized_ndim": 1}
            ev = oracles.evaluate("layer_norm", "forward", {"x": x}, attrs, "bfloat16")
            bug = oracles.evaluate("layer_norm", "forward", {"x": x}, attrs, "bfloat16",
                                   stats=one_pass_stats("float32", clamp=False)).outputs
            r = ev.ratios({k2: round_to("bfloat16", a) for k2, a in bug.items()}, "bfloat16")
            worst = max(worst, max(float(np.max(a)) for a in r.values()))
    assert worst <= 1


# --------------------------------------------------------------------------------------------------
# applicability


def test_not_applicable_mode_and_dtype():
    v = variant("momentum_inverted", "batch_norm")
    ex = examples(v, "training", "float32")
    with pytest.raises(NotApplicable):
        v.evaluate("inference", ex.inputs, ex.attrs, "float32")
    lp = variant("low_precision_accumulation", "batch_norm")
    with pytest.raises(NotApplicable):
        lp.evaluate("training", ex.inputs, ex.attrs, "float32")
    assert not lp.applies("training", "float32") and lp.applies("training", "float16")


@pytest.mark.parametrize("name", ["training_uses_running_stats", "running_stats_not_updated",
                                  "running_var_estimator_swapped", "momentum_inverted"])
def test_running_stat_variants_need_running_stats(name):
    v = variant(name, "batch_norm")
    ex = examples(v, "training", "float64")
    inputs = {k: a for k, a in ex.inputs.items() if not k.startswith("running_")}
    with pytest.raises(NotApplicable):
        v.evaluate("training", inputs, ex.attrs, "float64")


def test_momentum_inverted_needs_a_momentum():
    v = variant("momentum_inverted", "batch_norm")
    ex = examples(v, "training", "float64")
    with pytest.raises(NotApplicable):
        v.evaluate("training", ex.inputs, {**ex.attrs, "momentum": None}, "float64")


def test_l2_convention_swap_needs_a_floor_convention():
    v = variant("l2_eps_convention_swapped", "l2_normalize")
    x = np.ones((2, 3))
    with pytest.raises(NotApplicable):
        v.evaluate("forward", {"x": x}, {"eps": 1e-3, "eps_mode": "none"}, "float64")


def test_invalid_case_raises_like_the_oracle():
    x = np.ones((2, 6, 3))
    for v in variants_for("group_norm", "forward", "float32"):
        with pytest.raises(oracles.OracleInputError):
            v.evaluate("forward", {"x": x}, {"eps": 1e-5, "num_groups": 4}, "float32")
    with pytest.raises(oracles.OracleInputError):
        variant("eps_dropped", "layer_norm").evaluate("forward", {"x": x}, {"eps": -1.0, "normalized_ndim": 1},
                                                      "float32")


def test_public_api():
    assert set(bugzoo.__all__) == {"NotApplicable", "VARIANTS", "Variant", "examples", "shared_references", "variant",
                                   "variants_for"}
    assert all(isinstance(v, bugzoo.Variant) for v in VARIANTS)


# --------------------------------------------------------------------------------------------------
# shared references (what triage evaluates every variant of an op under)


SHARED = sorted({(v.op, mode, dtype) for v in VARIANTS for mode in v.modes for dtype in v.dtypes})


@pytest.mark.parametrize("op,mode,dtype", SHARED, ids=["-".join(k) for k in SHARED])
def test_shared_references_change_no_variant(op, mode, dtype):
    """Every variant of (op, mode, dtype), evaluated twice on one case inside
    `bugzoo.shared_references` as triage does (the case's arrays, the oracle's outputs shared and
    read-only), gives bit for bit what it gives alone, and raises what it raises alone."""
    cases = [examples(v, mode, dtype, inside=True) for v in variants_for(op, mode, dtype)]

    def alone(v, ex):
        try:
            return v.evaluate(mode, dict(ex.inputs), dict(ex.attrs), dtype)
        except (NotApplicable, oracles.OracleInputError) as e:
            return type(e)

    hits = 0
    for ex in cases:  # each variant's own example, on which every variant of the op is evaluated
        want = [alone(v, ex) for v in variants_for(op, mode, dtype)]
        with bugzoo.shared_references():
            for _ in range(2):
                got = [alone(v, ex) for v in variants_for(op, mode, dtype)]
                for v, w, g in zip(variants_for(op, mode, dtype), want, got):
                    if isinstance(w, type):
                        assert g is w, v.name
                        continue
                    hits += 1
                    assert list(g) == list(w), v.name
                    for k in w:
                        np.testing.assert_array_equal(g[k], w[k], err_msg=f"{v.name}: {k}")
    assert hits, "no variant evaluated"
