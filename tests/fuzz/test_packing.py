"""Packing (fuzz/packing.py): a packed case, split, is exactly its members.

The campaign evaluates the oracle once on a packed case and cuts references and bounds per member,
so for every op and mode the cut references and bounds must be each member's own (to the oracle's
rounding: concatenated reductions may sum in another order), and a framework's packed outputs, cut,
must be what it returns for each member alone (checked on torch, whose CPU kernels are
deterministic per set).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings

import oracles
from fuzz.case import Case
from fuzz.compare import reference
from fuzz.packing import PACK_ELEMENTS, pack, plan, split
from fuzz.strategies import FAMILY_SHARED, case_specs, materialize_family
from oracles.errormodel import Precision
from oracles.registry import modes

PAIRS = modes()


def _specs(op, mode, n, regimes=None, dtypes=("float32", "float16", "float64")):
    got = []

    @settings(max_examples=n, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case_specs(ops=[op], modes=[mode], dtypes=list(dtypes), regimes=regimes, max_elements=256))
    def draw(spec):
        got.append(spec)

    draw()
    return got


def _close(a, b, tol):
    """a equals b within `tol` (per element; NaN and NaN, or equal infinities, are equal; an
    infinite tolerance, an unconstrained element, accepts anything)."""
    a, b, tol = (np.asarray(v, dtype=np.longdouble) for v in (a, b, tol))
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", over="ignore"):
        near = (np.abs(a - b) <= tol) | np.isposinf(tol)
    return bool(np.all(same | near))


# Two oracle evaluations of the same set (alone, or inside a longer concatenated reduction that numpy
# may sum in another order) differ by at most twice the oracle's own error, which
# tests/oracles/test_precision.py keeps below 1.3e-4 of the bound for float64 (far less for the
# other formats): references must agree within 1e-3 of the bound. Bounds: the scale's relative error
# rho is computed as r_hi / r - 1, a difference of nearly equal numbers, so its own relative error is
# about u_x / rho with rho >= g(5, u_e): for float64 2**-64 / 5.5e-16 = 1e-4 (measured: 6e-8),
# negligible for the other formats; bounds must agree to relative 1e-4.
REF_TOL, BOUND_RTOL = 1e-3, 1e-4


@pytest.mark.parametrize("op,mode", PAIRS, ids=[f"{o}-{m}" for o, m in PAIRS])
def test_split_oracle_equals_members(op, mode):
    checked = 0
    # LayerNorm and RMSNorm vjp pack only without parameters: draw more to find such families
    for spec in _specs(op, mode, 60 if op in FAMILY_SHARED and mode == "vjp" else 25):
        members = materialize_family(spec, 3)
        p = plan(members)
        if p is None:
            continue
        packed = pack(members, p)
        prec = Precision.of(spec.dtype)
        ref = reference(packed, prec)
        alone = [reference(m, prec) for m in members]
        if ref.evaluation is None:  # a member's input is invalid: the campaign evaluates alone
            assert any(a.evaluation is None for a in alone)
            continue
        outs, bounds = split(p, ref.evaluation.outputs), split(p, ref.evaluation.bounds)
        for i, a in enumerate(alone):
            assert a.evaluation is not None
            assert set(outs[i]) == set(a.evaluation.outputs)
            for k, want in a.evaluation.outputs.items():
                assert outs[i][k].shape == want.shape, (k, spec)
                wb = a.evaluation.bounds[k]
                assert _close(outs[i][k], want, REF_TOL * wb), (k, spec)
                assert _close(bounds[i][k], wb, BOUND_RTOL * wb), (k, spec)
        checked += 1
    assert checked >= 5, f"only {checked} packable families of {op}/{mode}"


def test_what_packs():
    """Members of a LayerNorm family share their parameters; a vjp with a parameter, different
    attributes and too many elements do not pack; an MVN over every axis stacks."""
    from fuzz.strategies import CaseSpec

    spec = CaseSpec("layer_norm", "forward", "float32", "well_conditioned", (3, 5), {"eps": 1e-5, "axis": -1},
                    gamma="random", beta="random", seed=7)
    fam = materialize_family(spec, 4)
    assert all(np.array_equal(m.inputs["gamma"], fam[0].inputs["gamma"]) for m in fam)
    assert not np.array_equal(fam[1].inputs["x"], fam[0].inputs["x"])
    assert set(FAMILY_SHARED["layer_norm"]) >= {"gamma", "beta"}
    assert plan(fam) is not None and plan(fam[:1]) is None

    x = np.ones((2, 3), np.float32)
    lnv = [Case("layer_norm", "vjp", "float32", {"x": x + i, "dy": x, "gamma": x[0]}, {"eps": 1e-5, "normalized_ndim": 1})
           for i in range(3)]
    assert plan(lnv) is None
    lnv_nog = [Case("layer_norm", "vjp", "float32", {"x": x + i, "dy": x}, {"eps": 1e-5, "normalized_ndim": 1})
               for i in range(3)]
    assert plan(lnv_nog) is not None
    mvn_all = [Case("mvn", "forward", "float32", {"x": x + i}, {"eps": 1e-9, "axes": (0, -1), "eps_mode": "outside"})
               for i in range(3)]
    p = plan(mvn_all)  # every axis reduced: stacked along a new leading axis
    assert p.stacked and p.attrs["axes"] == (1, -1) and pack(mvn_all, p).inputs["x"].shape == (3, 2, 3)
    assert split(p, {"y": np.ones((3, 2, 3))})[2]["y"].shape == (2, 3)
    mixed = [Case("mvn", "forward", "float32", {"x": x}, {"eps": e, "axes": (1,), "eps_mode": "outside"})
             for e in (1e-9, 1e-8)]
    assert plan(mixed) is None
    big = np.ones((PACK_ELEMENTS // 2 + 1,), np.float32).reshape(-1, 1)
    assert plan([Case("mvn", "forward", "float32", {"x": big}, {"eps": 1e-9, "axes": (1,), "eps_mode": "outside"})] * 2) is None
    gn = [Case("group_norm", "forward", "float32", {"x": np.arange(24, dtype=np.float32).reshape(2, 4, 3) + i},
               {"eps": 1e-5, "num_groups": 2, "layout": "channels_first"}) for i in range(3)]
    p = plan(gn)
    assert p.attrs["num_groups"] == 6 and pack(gn, p).inputs["x"].shape == (2, 12, 3)


def test_split_refuses_wrong_shapes():
    x = np.ones((2, 3), np.float32)
    fam = [Case("mvn", "forward", "float32", {"x": x * (i + 1)}, {"eps": 1e-9, "axes": (1,), "eps_mode": "outside"})
           for i in range(3)]
    p = plan(fam)
    assert split(p, {"y": np.ones((6, 3))}) is not None
    assert split(p, {"y": np.ones((5, 3))}) is None
    assert split(p, {"y": np.float32(1)}) is None


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("op,mode", [("batch_norm", "training"), ("group_norm", "forward"), ("layer_norm", "forward"),
                                     ("instance_norm", "vjp"), ("group_norm", "vjp"), ("rms_norm", "jvp")])
def test_torch_packed_outputs_are_members_outputs(op, mode):
    """torch.functional on a packed case, cut: where a member alone disagrees with the oracle, its
    part of the packed call disagrees too (packing does not hide it). The converse need not hold: a
    kernel may take another path for more channels, e.g. float32 InstanceNorm backward with 1x1
    spatial dims (exact dx = 0) is within bound alone and not packed; the campaign re-runs such a
    member alone and records nothing (tests/fuzz/test_throughput.py)."""
    from fuzz.compare import compare
    from fuzz.outcome import Outcome
    from fuzz.runners.base import FrameworkRaised, Unsupported
    from fuzz.runners.torch_runner import runners

    r = {x.id: x for x in runners()}["torch.functional"]
    r.setup()
    checked = 0
    for spec in _specs(op, mode, 15, regimes=["well_conditioned"], dtypes=("float32",)):
        members = materialize_family(spec, 3)
        p = plan(members)
        if p is None or r.supports(op, mode, spec.dtype, p.attrs) is not None:
            continue
        packed = pack(members, p)
        try:
            parts = split(p, r.run(packed))
            alones = [r.run(m) for m in members]
        except (FrameworkRaised, Unsupported):  # one value per channel in training; a running-variance
            continue                            # estimator torch does not have
        for m, part, alone in zip(members, parts, alones):
            assert set(part) == set(alone)
            ref = reference(m, r.conventions_for(op, m.attrs).precision(m.dtype))
            v = compare(m, Outcome("torch.functional", m.id, "OK", outputs=part), ref)
            w = compare(m, Outcome("torch.functional", m.id, "OK", outputs=alone), ref)
            assert w.category == "agree" or v.category != "agree", (spec, v, w)
        checked += 1
    assert checked >= 3
