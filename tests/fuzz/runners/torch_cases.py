"""Well-conditioned case grids for the torch runner tests (seeded numpy, small shapes).

`grid(op, mode, dtype)` yields (label, Case) pairs covering the variants a torch path can express:
ranks, layouts, optional parameters, BatchNorm's running statistics and momentum conventions,
LayerNorm's normalized_ndim/axis forms, GroupNorm's affine granularity, L2 axes, weight-norm dims.
Data are well conditioned: spread comparable to the mean, running variances and |gamma| bounded
away from 0, eps at the APIs' defaults.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from tests.fuzz.runners.harness import make_case


from tests.fuzz.runners.harness import case_rng as _rng, draw_beta as _beta, draw_gamma as _gamma, draw_x as _x  # noqa: E402


def _with_kind(rng, kind, inputs, x_name, y_shape, params):
    """Add the cotangent (vjp) or tangents (jvp) for `kind` to `inputs`."""
    if kind == "vjp":
        inputs["d" + ("w" if x_name == "v" else "y")] = rng.normal(size=y_shape)
    elif kind == "jvp":
        inputs["t" + x_name] = rng.normal(size=y_shape)
        for name in params:
            if name in inputs:
                inputs["t" + name] = rng.normal(size=inputs[name].shape)
    return inputs


_AFFINE = {"both": ("gamma", "beta"), "gamma": ("gamma",), "beta": ("beta",), "none": ()}


def _bn_cases(mode, dtype):
    state, _, kind = mode.partition("_")
    kind = kind or "forward"
    shapes = {2: (6, 3), 3: (4, 3, 5), 4: (2, 3, 4, 3), 5: (2, 3, 2, 3, 2)}
    for rank, cf_shape in shapes.items():
        for layout in ("channels_first", "channels_last"):
            if layout == "channels_last" and rank == 2:
                continue
            for aff in ("both", "gamma", "beta", "none"):
                if aff in ("gamma", "beta") and (rank != 4 or layout != "channels_first"):
                    continue
                rng = _rng("bn", mode, dtype, rank, layout, aff)
                c = cf_shape[1]
                shape = cf_shape if layout == "channels_first" else (cf_shape[0],) + cf_shape[2:] + (c,)
                ins = {"x": _x(rng, shape)}
                for p in _AFFINE[aff]:
                    ins[p] = _gamma(rng, c) if p == "gamma" else _beta(rng, c)
                attrs = {"eps": 1e-5, "layout": layout}
                variants = [("", {})]
                if state == "inference" or (state == "training" and (kind == "forward" or aff == "both")):
                    ins["running_mean"] = rng.normal(size=c)
                    ins["running_var"] = rng.uniform(0.5, 2.0, size=c)
                if state == "training" and kind == "forward" and aff == "both":
                    variants = [("", {}), ("momentum=None nbt=3", {"momentum": None, "num_batches_tracked": 3}),
                                ("running m=0.9", {"momentum": 0.9, "momentum_on": "running"}),
                                ("no running stats", None)]
                for vlabel, extra in variants:
                    i = dict(ins)
                    at = dict(attrs)
                    if extra is None:
                        i.pop("running_mean"), i.pop("running_var")
                    else:
                        at.update(extra)
                    i = _with_kind(rng, kind, i, "x", shape, ("gamma", "beta"))
                    yield f"rank{rank} {layout} affine={aff} {vlabel}", make_case("batch_norm", mode, dtype, i, at)


def _bn_steps_cases(dtype):
    for rank, shape in {2: (6, 3), 4: (2, 3, 4, 3)}.items():
        for layout in ("channels_first", "channels_last"):
            if layout == "channels_last" and rank == 2:
                continue
            for label, extra in (("", {}), ("momentum=None nbt=2", {"momentum": None, "num_batches_tracked": 2}),
                                 ("running m=0.8", {"momentum": 0.8, "momentum_on": "running"})):
                rng = _rng("bn_steps", dtype, rank, layout, label)
                c = shape[1]
                s = shape if layout == "channels_first" else (shape[0],) + shape[2:] + (c,)
                ins = {"xs": _x(rng, (3,) + s), "running_mean": rng.normal(size=c),
                       "running_var": rng.uniform(0.5, 2.0, size=c), "gamma": _gamma(rng, c), "beta": _beta(rng, c)}
                attrs = {"eps": 1e-5, "layout": layout, **extra}
                yield f"rank{rank} {layout} {label}", make_case("batch_norm", "training_steps", dtype, ins, attrs)


def _trailing_cases(op, mode, dtype):
    names = ("gamma", "beta") if op == "layer_norm" else ("weight",)
    for shape, form in (((4, 6), {"normalized_ndim": 1}), ((2, 3, 4), {"normalized_ndim": 2}),
                        ((2, 3, 4), {"axis": -1}), ((3, 2, 2, 5), {"axis": 1})):
        affs = [names, ()] + ([("gamma",), ("beta",)] if op == "layer_norm" and shape == (4, 6) else [])
        for present in affs:
            rng = _rng(op, mode, dtype, shape, tuple(form.items()), present)
            k = form.get("normalized_ndim") or len(shape) - form["axis"] % len(shape)
            nshape = shape[len(shape) - k:]
            ins = {"x": _x(rng, shape)}
            for p in present:
                ins[p] = _beta(rng, nshape) if p == "beta" else _gamma(rng, nshape)
            ins = _with_kind(rng, mode, ins, "x", shape, names)
            yield f"{shape} {form} params={present}", make_case(op, mode, dtype, ins, {"eps": 1e-5, **form})


def _group_cases(mode, dtype):
    for cf_shape, groups in (((2, 6, 5), 3), ((2, 4, 3, 3), 2), ((3, 8), 2), ((2, 6, 2, 2, 2), 1)):
        for layout in ("channels_first", "channels_last"):
            if layout == "channels_last" and len(cf_shape) == 2:
                continue
            for affine in ("per_channel", "per_group"):
                for present in (("gamma", "beta"), ()):
                    if affine == "per_group" and not present:
                        continue
                    rng = _rng("gn", mode, dtype, cf_shape, layout, affine, present)
                    c = cf_shape[1]
                    shape = cf_shape if layout == "channels_first" else (cf_shape[0],) + cf_shape[2:] + (c,)
                    pshape = c if affine == "per_channel" else groups
                    ins = {"x": _x(rng, shape)}
                    if present:
                        ins["gamma"], ins["beta"] = _gamma(rng, pshape), _beta(rng, pshape)
                    ins = _with_kind(rng, mode, ins, "x", shape, ("gamma", "beta"))
                    attrs = {"eps": 1e-5, "num_groups": groups, "layout": layout, "affine": affine}
                    yield f"{shape} G={groups} {layout} {affine} params={present}", make_case(
                        "group_norm", mode, dtype, ins, attrs)


def _instance_cases(mode, dtype):
    for cf_shape in ((2, 3, 6), (2, 3, 3, 4), (2, 2, 2, 3, 2)):
        for layout in ("channels_first", "channels_last"):
            for present in (("gamma", "beta"), ()):
                rng = _rng("in", mode, dtype, cf_shape, layout, present)
                c = cf_shape[1]
                shape = cf_shape if layout == "channels_first" else (cf_shape[0],) + cf_shape[2:] + (c,)
                ins = {"x": _x(rng, shape)}
                if present:
                    ins["gamma"], ins["beta"] = _gamma(rng, c), _beta(rng, c)
                ins = _with_kind(rng, mode, ins, "x", shape, ("gamma", "beta"))
                yield f"{shape} {layout} params={present}", make_case(
                    "instance_norm", mode, dtype, ins, {"eps": 1e-5, "layout": layout})


def _l2_cases(mode, dtype):
    for shape, axes in (((4, 5), (-1,)), ((2, 3, 4), (1,)), ((2, 3, 4), (1, 2)), ((3, 2, 2), (0, 2))):
        for eps_mode in ("max_norm", "none"):
            rng = _rng("l2", mode, dtype, shape, axes, eps_mode)
            ins = _with_kind(rng, mode, {"x": _x(rng, shape, loc=0.0)}, "x", shape, ())
            attrs = {"eps": 1e-12, "axes": axes, "eps_mode": eps_mode}
            yield f"{shape} axes={axes} {eps_mode}", make_case("l2_normalize", mode, dtype, ins, attrs)


def _weight_norm_cases(mode, dtype):
    for shape in ((4, 3), (4, 3, 2), (3, 2, 2, 2), (2, 2, 2, 2, 2)):
        for dim in sorted({0, len(shape) - 1, -1, 1}):
            rng = _rng("wn", mode, dtype, shape, dim)
            ins = {"v": _x(rng, shape, loc=0.0), "g": _gamma(rng, shape[dim])}
            ins = _with_kind(rng, mode, ins, "v", shape, ("g",))
            yield f"v{shape} dim={dim}", make_case("weight_norm", mode, dtype, ins, {"dim": dim})
    if mode == "jvp":  # a tangent of v only
        rng = _rng("wn-tv", dtype)
        ins = {"v": _x(rng, (4, 3), loc=0.0), "g": _gamma(rng, (4, 1)), "tv": rng.normal(size=(4, 3))}
        yield "v(4, 3) g(4, 1) tv only", make_case("weight_norm", mode, dtype, ins, {"dim": 0})


def grid(op: str, mode: str, dtype: str) -> Iterator[tuple[str, object]]:
    """(label, Case) pairs for one op, mode and dtype."""
    if op == "batch_norm":
        yield from (_bn_steps_cases(dtype) if mode == "training_steps" else _bn_cases(mode, dtype))
    elif op in ("layer_norm", "rms_norm"):
        yield from _trailing_cases(op, mode, dtype)
    elif op == "group_norm":
        yield from _group_cases(mode, dtype)
    elif op == "instance_norm":
        yield from _instance_cases(mode, dtype)
    elif op == "l2_normalize":
        yield from _l2_cases(mode, dtype)
    elif op == "weight_norm":
        yield from _weight_norm_cases(mode, dtype)
    else:
        raise ValueError(f"no torch case grid for {op}")
