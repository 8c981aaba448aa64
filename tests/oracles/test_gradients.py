"""The oracles' closed-form VJPs and JVPs against high-precision finite differences.

For every gradient mode (batch_norm inference_vjp/training_vjp/inference_jvp/training_jvp; vjp and
jvp of layer_norm, group_norm, instance_norm, rms_norm, mvn, l2_normalize, weight_norm), parameter
tangents and cotangents included, the independent mpmath forward of `mpref` is differentiated
numerically: J t = (f(p + h t) - f(p - h t)) / (2 h) with h = 1e-20 at 80 digits (truncation error
~h**2 |f'''| ~ 1e-40 relative, rounding ~1e-80 / h = 1e-60), on seeded well-conditioned float64
cases (data of mean and spread O(1), 2..24 elements per set) and on both branches of the max()
eps conventions, with eps chosen a factor 2 away from the kink (so x +- h t never crosses it).

Checks, per case:
  (a) JVP: for three random directions t (x only, parameters only, both), the oracle's ty equals
      J t elementwise;
  (b) VJP: for the same t, <dy, J t> == <vjp(dy), t> (parameter cotangents included), and every
      component of vjp(dy) equals <dy, J e_j> for each basis direction e_j (x and parameters).

Tolerance. The oracle works in numpy.longdouble (u = 2**-64 ~ 5.4e-20). Each output is a short
combination of terms (for ty: gamma*r*(tx - mean tx), gamma*c*r'*(2/n_s)*sum(c*dc), tgamma*xhat,
tbeta; for dx: r*z, r'*(2/n_s)*sum(z*c)*c and their set means, z = gamma*dy; for dgamma/dbeta: the
sums of dy*xhat and dy), each computed with relative error at most about (2n+10) u from its
reductions over n <= 24 elements, plus u |mean| in the centered value (well-conditioned data:
|mean| ~ |c|). So |oracle - J t| <= (2n+10) u * T ~ 3e-18 T, where T is the sum of the terms'
magnitudes computed here in mpmath (`jvp_terms`, `vjp_terms`). The test requires
|oracle - exact| <= REL * T with REL = 1e-17: 3x the expected worst case, still 17 orders of
magnitude below the size of a wrong term (it was 1e-16 while `_core.jvp` still computed 2 / n_s as a
float64 constant; see the regression test below). The oracle's float64 bound must hold with a factor 100 to
spare too (|oracle - exact| <= bound / 100), the requirement of `test_precision` for gradients.

`pytest -s` prints the largest |oracle - exact| / T and / bound seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mpmath
import numpy as np
import pytest
from mpmath import mp, mpf

import oracles
from tests.oracles import mpref

REL = 1e-17
LIMIT = 1 / 100
DPS = 80
H = "1e-20"
NIGHTLY = os.environ.get("NORMFUZZ_NIGHTLY") == "1"
SEEDS = range(20) if NIGHTLY else range(3)

WORST = {"rel": (0.0, ""), "bound": (0.0, "")}

#: case names of each op's differentiable parameters and its forward mode (batch_norm: per state)
PARAMS = {"batch_norm": ("gamma", "beta"), "layer_norm": ("gamma", "beta"), "group_norm": ("gamma", "beta"),
          "instance_norm": ("gamma", "beta"), "rms_norm": ("weight",), "mvn": (), "l2_normalize": (),
          "weight_norm": ("g",)}


@dataclass(frozen=True)
class GradCase:
    """A float64 case: op, state ("inference"/"training" for batch_norm, else "forward"), inputs
    (x or v, the parameters present, running statistics), complete attrs, a label."""

    op: str
    state: str
    inputs: dict
    attrs: dict
    label: str

    @property
    def x_name(self) -> str:
        return "v" if self.op == "weight_norm" else "x"

    @property
    def y_name(self) -> str:
        return mpref.OUTPUT_OF[self.op]

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(p for p in PARAMS[self.op] if p in self.inputs)

    def mode(self, kind: str) -> str:
        return f"{self.state}_{kind}" if self.op == "batch_norm" else kind

    def oracle_inputs(self) -> dict:
        """Inputs for the oracle (running statistics only in BN inference)."""
        if self.op == "batch_norm" and self.state == "training":
            return {k: v for k, v in self.inputs.items() if not k.startswith("running")}
        return dict(self.inputs)

    def forward(self, inputs: dict) -> np.ndarray:
        """The differentiated output at the caller's precision (object array of mpf)."""
        mode = self.state if self.op == "batch_norm" else "forward"
        i = dict(inputs)
        if self.op == "batch_norm" and self.state == "training":
            i = {k: v for k, v in i.items() if not k.startswith("running")}
        return mpref.evaluate(self.op, mode, i, self.attrs, dps=None)[self.y_name]

    def __str__(self):
        shapes = " ".join(f"{k}{list(np.shape(v))}" for k, v in self.inputs.items())
        return f"{self.op}/{self.state} {self.label} {shapes} {self.attrs}"


BN = dict(momentum=0.1, momentum_on="batch", running_var_estimator="unbiased", num_batches_tracked=0)


def cases(seed: int) -> list[GradCase]:
    """Well-conditioned float64 cases for every op and convention (data mean ~1, spread ~1)."""
    rng = np.random.default_rng(seed)
    x = lambda *s: 0.5 + rng.normal(size=s)  # noqa: E731
    pos = lambda *s: rng.uniform(0.5, 2.0, size=s) * rng.choice([-1.0, 1.0], size=s)  # noqa: E731
    out = []
    for layout, shape in (("channels_first", (3, 2, 4)), ("channels_last", (2, 4, 3))):
        c = shape[1] if layout == "channels_first" else shape[-1]
        a = dict(eps=1e-5, layout=layout, **BN)
        stats = dict(running_mean=rng.normal(size=c), running_var=rng.uniform(0.5, 2.0, c))
        out += [
            GradCase("batch_norm", "inference", dict(x=x(*shape), gamma=pos(c), beta=x(c), **stats), a, "affine"),
            GradCase("batch_norm", "inference", dict(x=x(*shape), **stats), a, "no affine"),
            GradCase("batch_norm", "training", dict(x=x(*shape), gamma=pos(c), beta=x(c)), a, "affine"),
            GradCase("batch_norm", "training", dict(x=x(*shape)), {**a, "eps": 0.3}, "no affine, large eps"),
        ]
    out += [
        GradCase("layer_norm", "forward", dict(x=x(2, 3, 4), gamma=pos(3, 4), beta=x(3, 4)),
                 dict(eps=1e-5, normalized_ndim=2), "normalized_ndim"),
        GradCase("layer_norm", "forward", dict(x=x(3, 5), gamma=pos(5)), dict(eps=0.1, axis=-1), "axis, gamma only"),
        GradCase("layer_norm", "forward", dict(x=x(2, 6)), dict(eps=0.0, axis=0), "whole array, eps=0"),
        GradCase("group_norm", "forward", dict(x=x(2, 4, 3), gamma=pos(4), beta=x(4)),
                 dict(eps=1e-5, num_groups=2, layout="channels_first", affine="per_channel"), "per_channel"),
        GradCase("group_norm", "forward", dict(x=x(2, 3, 4), gamma=pos(2), beta=x(2)),
                 dict(eps=1e-3, num_groups=2, layout="channels_last", affine="per_group"), "per_group"),
        GradCase("instance_norm", "forward", dict(x=x(2, 2, 5), gamma=pos(2), beta=x(2)),
                 dict(eps=1e-5, layout="channels_first"), "affine"),
        GradCase("instance_norm", "forward", dict(x=x(2, 2, 3, 2)), dict(eps=0.2, layout="channels_last"), "no affine"),
        GradCase("rms_norm", "forward", dict(x=x(3, 5), weight=pos(5)), dict(eps=1e-5, normalized_ndim=1), "weight"),
        GradCase("rms_norm", "forward", dict(x=x(2, 2, 3)), dict(eps=0.5, axis=1), "no weight, axis"),
    ]
    for mode, eps in (("inside", 1e-5), ("outside", 0.3), ("none", 0.0)):
        out.append(GradCase("mvn", "forward", dict(x=x(3, 2, 4)), dict(eps=eps, axes=(0, 2), eps_mode=mode), mode))
    # l2 / weight norm: the max() conventions on both sides of the kink (eps a factor 2 away)
    xl = x(3, 4)
    norms = np.sqrt(np.sum(xl ** 2, axis=-1))
    for mode, eps, label in (("none", 0.0, ""), ("inside", 0.5, ""),
                             ("max_norm", 0.5 * norms.min(), "norm branch"),
                             ("max_norm", 2.0 * norms.max(), "floor branch"),
                             ("max_sumsq", 0.5 * norms.min() ** 2, "norm branch"),
                             ("max_sumsq", 2.0 * norms.max() ** 2, "floor branch")):
        out.append(GradCase("l2_normalize", "forward", dict(x=xl), dict(eps=eps, axes=(-1,), eps_mode=mode), label))
    out.append(GradCase("l2_normalize", "forward", dict(x=x(2, 3, 2)),
                        dict(eps=1e-12, axes=(0, 2), eps_mode="max_norm"), "two axes"))
    v = x(3, 2, 2)
    vn = np.sqrt(np.sum(v ** 2, axis=(1, 2)))
    out += [
        GradCase("weight_norm", "forward", dict(v=v, g=pos(3)), dict(eps=0.0, dim=0, eps_mode="none"), "dim 0"),
        GradCase("weight_norm", "forward", dict(v=x(2, 3), g=pos(3, 1).reshape(1, 3)),
                 dict(eps=0.0, dim=1, eps_mode="none"), "dim 1, g (1, 3)"),
        GradCase("weight_norm", "forward", dict(v=x(2, 2, 3), g=pos(3)), dict(eps=0.1, dim=-1, eps_mode="inside"),
                 "dim -1"),
        GradCase("weight_norm", "forward", dict(v=v, g=pos(3)), dict(eps=0.5 * vn.min(), dim=0, eps_mode="max_norm"),
                 "norm branch"),
        GradCase("weight_norm", "forward", dict(v=v, g=pos(3)), dict(eps=2 * vn.max(), dim=0, eps_mode="max_norm"),
                 "floor branch"),
        GradCase("weight_norm", "forward", dict(v=v, g=pos(3)),
                 dict(eps=2 * vn.max() ** 2, dim=0, eps_mode="max_sumsq"), "floor branch"),
    ]
    return out


# --------------------------------------------------------------------------------------------------
# term magnitudes (the scale T of the tolerance; see the module docstring)


def _rprime(v, eps, eps_mode):
    """|dr/dv| by a central difference of `mpref.rscale` (a magnitude only: relative error ~1e-30)."""
    d = abs(v) * mpf("1e-30")
    return abs(mpref.rscale(v + d, eps, eps_mode) - mpref.rscale(v - d, eps, eps_mode)) / (2 * d)


def _set_sums(p: mpref.Parts, values: np.ndarray) -> dict:
    sums: dict = {}
    for idx in np.ndindex(values.shape):
        sums[p.key[idx]] = sums.get(p.key[idx], 0) + values[idx]
    return sums


def _per_element(p: mpref.Parts, per_set: dict) -> np.ndarray:
    out = np.empty(p.key.shape, dtype=object)
    for idx in np.ndindex(out.shape):
        out[idx] = per_set[p.key[idx]]
    return out


def jvp_terms(p: mpref.Parts, tx, tg=None, tb=None) -> np.ndarray:
    """Per element: |gamma| (r |dc| + |c| |r'| (2/n_s) sum|c dc|) + |tgamma xhat| + |tbeta|, with
    |dc| <= |tx| + |mean tx| (centered); |gamma| r |tx| + ... for fixed statistics."""
    atx = np.abs(tx)
    gam = 1 if p.gamma is None else np.abs(p.gamma)
    if p.given:
        core = p.r * atx
    else:
        adc = atx + np.abs(_per_element(p, _set_sums(p, tx))) / p.n if p.centered else atx
        rp = np.array([_rprime(v, p.eps, p.eps_mode) for v in p.v.ravel()], dtype=object).reshape(p.v.shape)
        scd = _per_element(p, _set_sums(p, np.abs(p.c) * adc))
        core = p.r * adc + np.abs(p.c) * rp * 2 / p.ns * scd
    t = gam * core
    if tg is not None:
        t = t + np.abs(_gather(p, tg) * p.xhat)
    if tb is not None:
        t = t + np.abs(_gather(p, tb))
    return t


def vjp_terms(p: mpref.Parts, dy) -> np.ndarray:
    """Per element of dx: T_j = r|z_j| + |r'| (2/n_s) sum|z c| |c_j| (+ the set mean of T when
    centered), z = gamma dy; r |z_j| for fixed statistics."""
    z = np.abs(dy) * (1 if p.gamma is None else np.abs(p.gamma))
    if p.given:
        return p.r * z
    rp = np.array([_rprime(v, p.eps, p.eps_mode) for v in p.v.ravel()], dtype=object).reshape(p.v.shape)
    t = p.r * z + rp * 2 / p.ns * _per_element(p, _set_sums(p, z * np.abs(p.c))) * np.abs(p.c)
    if p.centered:
        t = t + _per_element(p, _set_sums(p, t)) / p.n
    return t


def _gather(p: mpref.Parts, param) -> np.ndarray:
    """A parameter-shaped array spread onto the elements that use each entry."""
    flat = mpref.to_mp(param, dps=None).reshape(-1)
    out = np.empty(p.pidx.shape, dtype=object)
    for idx in np.ndindex(out.shape):
        out[idx] = flat[p.pidx[idx]]
    return out


def _scatter(p: mpref.Parts, values: np.ndarray, size: int) -> np.ndarray:
    """Sum element values into the parameter entries they use (flat)."""
    out = np.array([mpf(0)] * size, dtype=object)
    for idx in np.ndindex(values.shape):
        out[p.pidx[idx]] += values[idx]
    return out


# --------------------------------------------------------------------------------------------------
# checks


def _record(kind: str, value: float, where: str):
    if value > WORST[kind][0]:
        WORST[kind] = (value, where)


def _compare(name: str, actual, exact: np.ndarray, scale: np.ndarray, bound, where: str) -> list[str]:
    """|actual - exact| <= REL * scale and <= LIMIT * bound, elementwise; returns failure lines."""
    a = mpref.to_mp(np.asarray(actual), dps=None).reshape(exact.shape)
    b = np.asarray(bound).reshape(exact.shape)
    bad = []
    for idx in np.ndindex(exact.shape):
        err = abs(a[idx] - exact[idx])
        rel = float(err / scale[idx]) if scale[idx] else (0.0 if err == 0 else float("inf"))
        brat = float(err / mpref.to_mp(b[idx], dps=None)[()]) if err else 0.0
        _record("rel", rel, f"{name}{list(idx)} in {where}")
        _record("bound", brat, f"{name}{list(idx)} in {where}")
        if rel > REL or brat > LIMIT:
            bad.append(f"{name}{list(idx)}: oracle {mpmath.nstr(a[idx], 22)}, finite difference "
                       f"{mpmath.nstr(exact[idx], 22)}, |diff|/T = {rel:.3g} (limit {REL:g}), "
                       f"|diff|/bound = {brat:.3g} (limit {LIMIT:g})")
    return bad


def _directions(case: GradCase, rng) -> list[dict]:
    """Random tangents: x only, parameters only (when there are any), both."""
    tx = {case.x_name: rng.normal(size=np.shape(case.inputs[case.x_name]))}
    tp = {k: rng.normal(size=np.shape(case.inputs[k])) for k in case.params}
    dirs = [tx, {**tx, **{k: rng.normal(size=np.shape(v)) for k, v in tp.items()}}]
    dirs.insert(1, tp if tp else {case.x_name: rng.normal(size=np.shape(case.inputs[case.x_name]))})
    return dirs


def _basis(case: GradCase):
    """(input name, flat index, tangent dict) for every scalar the VJP differentiates."""
    for name in (case.x_name,) + case.params:
        shape = np.shape(case.inputs[name])
        for j in range(int(np.prod(shape))):
            e = np.zeros(int(np.prod(shape)))
            e[j] = 1.0
            yield name, j, {name: e.reshape(shape)}


def run_case(case: GradCase, seed: int) -> list[str]:
    rng = np.random.default_rng(1000 + seed)
    inputs = case.oracle_inputs()
    y_shape = np.shape(case.inputs[case.x_name])
    dy = rng.normal(size=y_shape)
    problems = []
    with mp.workdps(DPS):
        p = mpref.parts(case.op, case.inputs, case.attrs, state=case.state, dps=None)
        dy_mp = mpref.to_mp(dy, dps=None)

        # VJP from the oracle, its bounds, its term magnitudes
        cot = "d" + case.y_name
        vj = oracles.evaluate(case.op, case.mode("vjp"), {**inputs, cot: dy}, case.attrs, "float64")
        vt = vjp_terms(p, dy_mp)
        ady_xhat = np.abs(dy_mp * p.xhat)
        vscale = {case.x_name: vt}
        for name in case.params:  # dgamma (and dweight, dg): sums of dy*xhat; dbeta: sums of dy
            full = np.abs(dy_mp) if name == "beta" else ady_xhat
            vscale[name] = _scatter(p, full, int(np.size(case.inputs[name])))
        # (b1) every VJP component against <dy, J e_j>
        for name in (case.x_name,) + case.params:
            shape = np.shape(case.inputs[name])
            exact = np.empty(int(np.prod(shape)), dtype=object)
            for _, j, e in ((n, j, e) for n, j, e in _basis(case) if n == name):
                jt = mpref.jvp_fd(case.forward, case.inputs, e, h=H, dps=DPS)
                exact[j] = mpmath.fsum(dy_mp.ravel() * jt.ravel())
            out = vj.outputs["d" + name]
            problems += _compare("d" + name, out, exact, vscale[name].reshape(-1), vj.bounds["d" + name],
                                 f"{case} vjp")

        # (a) JVP and (b2) the inner-product identity along random directions
        for t in _directions(case, rng):
            jt = mpref.jvp_fd(case.forward, case.inputs, t, h=H, dps=DPS)
            tx = t.get(case.x_name, np.zeros(y_shape))  # the oracle requires an x tangent
            tin = {"t" + k: v for k, v in {**t, case.x_name: tx}.items()}
            jv = oracles.evaluate(case.op, case.mode("jvp"), {**inputs, **tin}, case.attrs, "float64")
            ptan = {("tb" if name == "beta" else "tg"): t.get(name) for name in case.params}
            scale = jvp_terms(p, mpref.to_mp(tx, dps=None), **ptan)
            where = f"{case} jvp along {sorted(t)}"
            problems += _compare("t" + case.y_name, jv.outputs["t" + case.y_name], jt, scale,
                                 jv.bounds["t" + case.y_name], where)
            lhs = mpmath.fsum(dy_mp.ravel() * jt.ravel())
            rhs, tol = mpf(0), mpf(0)
            for name, tan in t.items():
                g = mpref.to_mp(vj.outputs["d" + name], dps=None).reshape(-1)
                tm = mpref.to_mp(tan, dps=None).reshape(-1)
                rhs += mpmath.fsum(g * tm)
                tol += mpmath.fsum(vscale[name].reshape(-1) * np.abs(tm))
            if abs(lhs - rhs) > REL * tol:
                problems.append(f"<dy, J t> = {mpmath.nstr(lhs, 22)} but <vjp(dy), t> = {mpmath.nstr(rhs, 22)} "
                                f"(|diff| / T = {float(abs(lhs - rhs) / tol):.3g}) in {where}")
    return problems


ALL = [(seed, i) for seed in SEEDS for i in range(len(cases(seed)))]


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\ngradients vs finite differences: worst |oracle - exact| / T = {WORST['rel'][0]:.3e} "
          f"(limit {REL:g}) at {WORST['rel'][1]}")
    print(f"worst |oracle - exact| / float64 bound = {WORST['bound'][0]:.3e} (limit {LIMIT:g}) at "
          f"{WORST['bound'][1]}")


@pytest.mark.parametrize("seed,index", ALL, ids=[f"{cases(s)[i].op}-{cases(s)[i].state}-{cases(s)[i].label}-s{s}"
                                                 .replace(" ", "_") for s, i in ALL])
def test_gradients_match_finite_differences(seed, index):
    case = cases(seed)[index]
    problems = run_case(case, seed)
    assert not problems, f"{case}:\n" + "\n".join(problems[:10])


def test_every_gradient_mode_is_covered():
    """Every VJP/JVP mode of the registry is exercised by some case, with parameter directions
    wherever the op has parameters, and both branches of each max() convention."""
    cs = cases(0)
    modes = {(c.op, c.mode(k)) for c in cs for k in ("vjp", "jvp")}
    wanted = {(op, m) for op, m in oracles.modes() if m.endswith("vjp") or m.endswith("jvp")}
    assert wanted <= modes, wanted - modes
    for op in PARAMS:
        if PARAMS[op]:
            assert any(c.op == op and len(c.params) == len(PARAMS[op]) for c in cs), op
    for op in ("l2_normalize", "weight_norm"):
        for mode in ("max_norm", "max_sumsq"):
            labels = {c.label for c in cs if c.op == op and c.attrs.get("eps_mode") == mode}
            assert "floor branch" in labels, (op, mode)
            if op == "l2_normalize" or mode == "max_norm":
                assert "norm branch" in labels, (op, mode)


def test_floor_branch_has_zero_derivative_through_the_norm():
    """In the floor branch of max_norm / max_sumsq, r = 1/eps (resp. 1/sqrt(eps)) is constant, so
    l2_normalize's Jacobian is I/eps: J t == t / eps exactly (a check of the reference itself)."""
    for c in cases(0):
        if c.op == "l2_normalize" and c.label == "floor branch":
            x = c.inputs["x"]
            t = np.random.default_rng(5).normal(size=x.shape)
            with mp.workdps(DPS):
                jt = mpref.jvp_fd(c.forward, c.inputs, {"x": t}, h=H, dps=DPS)
                den = mpf(c.attrs["eps"]) if c.attrs["eps_mode"] == "max_norm" else mpmath.sqrt(c.attrs["eps"])
                want = mpref.to_mp(t, dps=None) / den
                assert all(abs(a - b) <= mpf("1e-35") * abs(b) for a, b in zip(jt.ravel(), want.ravel()))


# Regression: oracles._core.jvp once computed `rp * (2 / ns)` with 2 / ns a Python float (relative
# error up to 2**-53 when n_s is not a power of two): |ty - J t| was 1.2e-16 = 0.0107 * its float64
# bound on the case below, and 4e-17 T in the seeded cases (2e-19 T with EXT(2) / ns).


def test_jvp_statistics_term_in_extended_precision():
    """rms_norm over n = 3 elements (2/3 is inexact in float64): the JVP must be accurate to a few
    longdouble ulps of its terms (1e-17 T leaves a factor 3 over (2n+10) u) and within 1/100 of the
    float64 bound."""
    x = np.array([[float.fromhex(h) for h in ("0x1.f20df77ecdc61p-2", "-0x1.e8d9715cfb659p-2",
                                               "0x1.56b3aec0a9e49p-1")]])
    t = np.array([[float.fromhex(h) for h in ("-0x1.6325bc3af0df2p+0", "0x1.aa77aa042ae54p+0",
                                               "-0x1.87071a71456b8p-3")]])
    case = GradCase("rms_norm", "forward", dict(x=x), dict(eps=1e-5, normalized_ndim=1), "n=3")
    ev = oracles.evaluate("rms_norm", "jvp", {"x": x, "tx": t}, case.attrs, "float64")
    with mp.workdps(DPS):
        jt = mpref.jvp_fd(case.forward, case.inputs, {"x": t}, h=H, dps=DPS)
        scale = jvp_terms(mpref.parts("rms_norm", case.inputs, case.attrs, dps=None), mpref.to_mp(t, dps=None))
        a = mpref.to_mp(ev.outputs["ty"], dps=None)
        b = mpref.to_mp(ev.bounds["ty"], dps=None)
        err = np.abs(a - jt)
        assert all(e <= LIMIT * bb for e, bb in zip(err.ravel(), b.ravel())), [float(e / bb) for e, bb in
                                                                                zip(err.ravel(), b.ravel())]
        assert all(e <= 1e-17 * s for e, s in zip(err.ravel(), scale.ravel()))
