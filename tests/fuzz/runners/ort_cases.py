"""Well-conditioned case grids for the ONNX Runtime runner tests (seeded numpy, small shapes).

`grid(op, mode, dtype)` returns (label, Case) pairs covering what the ONNX operators express: ranks,
layouts (channels-last through Transposes), optional parameters present and absent, BatchNorm's
running statistics and momentum conventions, LayerNorm/RMSNorm's normalized_ndim and axis forms,
GroupNorm's two affine granularities (opset 18 and 21), MVN axes, LpNormalization axes. Data are
well conditioned: spread comparable to the mean, running variances and |gamma| bounded away from 0.

eps and momentum: ONNX stores both as float32 attributes, so float64 cases use float32 values
(eps = 2**-17, momentum 0.25 on "batch" = ONNX momentum 0.75); the other formats use 1e-5 and 0.1.
"""

from __future__ import annotations


import numpy as np

from tests.fuzz.runners.harness import make_case


from tests.fuzz.runners.harness import case_rng as _rng, draw_beta as _beta, draw_gamma as _gamma, draw_x as _x  # noqa: E402


def eps_for(dtype: str) -> float:
    """The grid's default eps: 1e-5, or the float32 value 2**-17 for float64 cases."""
    return 2.0 ** -17 if dtype == "float64" else 1e-5


def momentum_for(dtype: str) -> float:
    """The grid's batch-convention momentum (ONNX momentum 1 - m must be float32 for float64)."""
    return 0.25 if dtype == "float64" else 0.1


_AFFINE = {"both": ("gamma", "beta"), "gamma": ("gamma",), "beta": ("beta",), "none": ()}


def _bn(mode, dtype):
    out = []
    eps = eps_for(dtype)
    shapes = {2: (6, 3), 3: (4, 3, 5), 4: (2, 3, 4, 3)}
    for rank, cf in shapes.items():
        for layout in ("channels_first", "channels_last"):
            if layout == "channels_last" and rank == 2:
                continue
            for aff in ("both", "none") if rank != 3 else ("both", "gamma", "beta", "none"):
                rng = _rng("bn", mode, dtype, rank, layout, aff)
                c = cf[1]
                shape = cf if layout == "channels_first" else (cf[0],) + cf[2:] + (c,)
                if mode == "training_steps":
                    shape = (3,) + shape
                ins = {"xs" if mode == "training_steps" else "x": _x(rng, shape)}
                for p in _AFFINE[aff]:
                    ins[p] = _gamma(rng, c) if p == "gamma" else _beta(rng, c)
                ins["running_mean"] = rng.normal(size=c)
                ins["running_var"] = rng.uniform(0.5, 2.0, size=c)
                attrs = {"eps": eps, "layout": layout, "momentum": momentum_for(dtype),
                         "running_var_estimator": "biased"}
                variants = [("", ins, attrs)]
                if mode == "training" and rank == 3 and aff == "both":
                    variants += [
                        ("running m=0.75", ins, dict(attrs, momentum=0.75, momentum_on="running")),
                        ("momentum=None nbt=3", ins, dict(attrs, momentum=None, num_batches_tracked=3)),
                        # no running statistics: the unbiased default estimator does not matter
                        ("no running stats", {k: v for k, v in ins.items() if not k.startswith("running")},
                         {"eps": eps, "layout": layout}),
                    ]
                if mode == "training_steps" and rank == 3 and aff == "both":
                    variants.append(("running m=0.5", ins, dict(attrs, momentum=0.5, momentum_on="running")))
                if mode == "inference" and rank == 4 and aff == "both":
                    variants.append(("eps=2**-10", ins, dict(attrs, eps=2.0 ** -10)))
                for v, i, a in variants:
                    out.append((f"rank{rank} {layout} {aff} {v}".strip(), make_case("batch_norm", mode, dtype, i, a)))
    return out


def _trailing(op, dtype):
    out = []
    eps = eps_for(dtype)
    pname = ("weight",) if op == "rms_norm" else ("gamma", "beta")
    for shape, form in (((2, 3, 5), {"normalized_ndim": 1}), ((2, 3, 5), {"normalized_ndim": 2}),
                        ((3, 4, 2, 3), {"axis": 1}), ((4, 6), {"axis": -1}), ((5,), {"normalized_ndim": 1})):
        k = form.get("normalized_ndim") or len(shape) - form["axis"] % len(shape)
        nshape = shape[len(shape) - k:]
        affs = ("both", "gamma", "beta", "none") if op == "layer_norm" else ("both", "none")
        for aff in affs:
            rng = _rng(op, dtype, shape, tuple(form.items()), aff)
            ins = {"x": _x(rng, shape)}
            if op == "rms_norm":
                if aff == "both":
                    ins["weight"] = _gamma(rng, nshape)
            else:
                for p in _AFFINE[aff]:
                    ins[p] = _gamma(rng, nshape) if p == "gamma" else _beta(rng, nshape)
            out.append((f"{shape} {form} {aff}", make_case(op, "forward", dtype, ins, dict(form, eps=eps))))
    rng = _rng(op, dtype, "eps")
    x = _x(rng, (3, 8))
    out.append(("eps=2**-10", make_case(op, "forward", dtype, {"x": x, pname[0]: _gamma(rng, (8,))},
                                        {"normalized_ndim": 1, "eps": 2.0 ** -10})))
    return out


def _group(dtype):
    out = []
    eps = eps_for(dtype)
    for shape, g in (((2, 4, 3), 2), ((2, 6, 2, 3), 3), ((3, 4), 2), ((2, 4, 5), 1), ((2, 4, 5), 4)):
        for layout in ("channels_first", "channels_last"):
            if layout == "channels_last" and len(shape) == 2:
                continue
            c = shape[1]
            xs = shape if layout == "channels_first" else (shape[0],) + shape[2:] + (c,)
            for affine in ("per_channel", "per_group"):
                for aff in ("both", "none", "gamma"):
                    rng = _rng("gn", dtype, shape, g, layout, affine, aff)
                    plen = c if affine == "per_channel" else g
                    ins = {"x": _x(rng, xs)}
                    for p in _AFFINE[aff]:
                        ins[p] = _gamma(rng, plen) if p == "gamma" else _beta(rng, plen)
                    attrs = {"eps": eps, "num_groups": g, "layout": layout, "affine": affine}
                    out.append((f"{xs} G={g} {layout} {affine} {aff}", make_case("group_norm", "forward", dtype, ins, attrs)))
    return out


def _instance(dtype):
    out = []
    eps = eps_for(dtype)
    for cf in ((2, 3, 5), (2, 3, 2, 3), (1, 2, 2, 2, 2)):
        for layout in ("channels_first", "channels_last"):
            c = cf[1]
            xs = cf if layout == "channels_first" else (cf[0],) + cf[2:] + (c,)
            for aff in ("both", "gamma", "none"):
                rng = _rng("in", dtype, cf, layout, aff)
                ins = {"x": _x(rng, xs)}
                for p in _AFFINE[aff]:
                    ins[p] = _gamma(rng, c) if p == "gamma" else _beta(rng, c)
                out.append((f"{xs} {layout} {aff}", make_case("instance_norm", "forward", dtype, ins,
                                                              {"eps": eps, "layout": layout})))
    return out


def _mvn(dtype):
    out = []
    for shape, axes in (((2, 3, 4, 5), (0, 2, 3)), ((2, 3, 4, 5), (1,)), ((2, 3, 4, 5), (2, 3)),
                        ((3, 4, 5), (0, 2)), ((4, 6), (-1,)), ((2, 3, 2, 2, 2), (0, 2, 3))):
        rng = _rng("mvn", dtype, shape, axes)
        out.append((f"{shape} axes={axes}", make_case("mvn", "forward", dtype, {"x": _x(rng, shape)},
                                                      {"axes": axes, "eps": 1e-9, "eps_mode": "outside"})))
    return out


def _l2(dtype):
    out = []
    for shape, axes in (((2, 3, 4), (-1,)), ((2, 3, 4), (1,)), ((5, 3), (0,)), ((7,), (0,))):
        rng = _rng("l2", dtype, shape, axes)
        out.append((f"{shape} axes={axes}", make_case("l2_normalize", "forward", dtype, {"x": _x(rng, shape)},
                                                      {"axes": axes, "eps": 0.0, "eps_mode": "none"})))
    return out


def grid(op: str, mode: str, dtype: str) -> list:
    """(label, Case) pairs for one op/mode/dtype (see the module docstring)."""
    if op == "batch_norm":
        return _bn(mode, dtype)
    if op in ("layer_norm", "rms_norm"):
        return _trailing(op, dtype)
    if op == "group_norm":
        return _group(dtype)
    if op == "instance_norm":
        return _instance(dtype)
    if op == "mvn":
        return _mvn(dtype)
    if op == "l2_normalize":
        return _l2(dtype)
    raise ValueError(f"no grid for op={op!r}")
