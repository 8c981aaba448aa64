"""Well-conditioned case grids for the TensorFlow/Keras runner tests (seeded numpy, small shapes).

`grid(runner)` yields (label, Case) for every op, mode and dtype the runner declares, over a few
shapes, layouts and parameter combinations; `make(op, mode, dtype, ...)` builds one case. Arrays
come from a seeded generator: data with a moderate offset and unit spread, gamma near 1, beta and
running statistics of moderate size, so that every format (bfloat16 included) is well conditioned.
"""

from __future__ import annotations

import zlib
from typing import Any, Iterator

import numpy as np

from tests.fuzz.runners.harness import make_case

BN_EPS = 1e-3


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _data(rng, shape, offset=0.25) -> np.ndarray:
    return offset + rng.standard_normal(shape)


def _param(rng, shape, base) -> np.ndarray:
    return base + 0.3 * rng.standard_normal(shape)


def make(op: str, mode: str, dtype: str, shape: tuple[int, ...], attrs: dict[str, Any], *,
         gamma: bool = True, beta: bool = True, running: bool = True, tparams: bool = True,
         steps: int = 3, seed: int = 0):
    """One case of `op`/`mode` with x of `shape` (attrs are the oracle's)."""
    rng = _rng(op, mode, dtype, shape, sorted(attrs.items()), gamma, beta, running, seed)
    ins: dict[str, np.ndarray] = {}
    kind = mode.rsplit("_", 1)[-1] if mode not in ("training_steps",) else "steps"
    if op == "batch_norm":
        c = shape[-1] if attrs.get("layout") == "channels_last" else shape[1]
        pshape = (c,)
        if mode == "training_steps":
            ins["xs"] = _data(rng, (steps,) + shape)
        else:
            ins["x"] = _data(rng, shape)
        if mode.startswith("inference") or mode == "training_steps" or (mode == "training" and running):
            ins["running_mean"] = 0.5 * rng.standard_normal(c)
            ins["running_var"] = 0.5 + rng.random(c)
    elif op == "group_norm":
        c = shape[-1] if attrs.get("layout") == "channels_last" else shape[1]
        pshape = (attrs["num_groups"],) if attrs.get("affine") == "per_group" else (c,)
        ins["x"] = _data(rng, shape)
    elif op == "instance_norm":
        c = shape[-1] if attrs.get("layout") == "channels_last" else shape[1]
        pshape = (c,)
        ins["x"] = _data(rng, shape)
    elif op in ("layer_norm", "rms_norm"):
        k = attrs.get("normalized_ndim") or (len(shape) - attrs["axis"] % len(shape))
        pshape = shape[len(shape) - k:]
        ins["x"] = _data(rng, shape)
    else:  # mvn, l2_normalize
        pshape = None
        gamma = beta = False
        ins["x"] = _data(rng, shape)
    pnames = {"rms_norm": [("weight", gamma, 1.0)]}.get(op, [("gamma", gamma, 1.0), ("beta", beta, 0.0)])
    for name, present, base in pnames:
        if present and pshape is not None:
            ins[name] = _param(rng, pshape, base)
    xshape = ins["x"].shape if "x" in ins else None
    if kind == "vjp":
        ins["dy"] = rng.standard_normal(xshape)
    if kind == "jvp":
        ins["tx"] = rng.standard_normal(xshape)
        if tparams:
            for name, present, _ in pnames:
                if name in ins:
                    ins["t" + name] = rng.standard_normal(pshape)
    return make_case(op, mode, dtype, ins, attrs)


def expressible(runner_id: str, case) -> bool:
    """Whether `runner_id` can express `case` beyond what `supports` sees (shapes, presence of
    running statistics): the rules each path documents, written independently of the runner."""
    if case.op != "batch_norm":
        return True
    a = {"momentum": 0.1, "running_var_estimator": "unbiased", **case.attrs}
    running = "running_mean" in case.inputs and case.mode in ("training", "training_steps")
    if runner_id == "tf.fused_batch_norm":
        x = case.inputs["xs"][0] if case.mode == "training_steps" else case.inputs["x"]
        return x.ndim in (4, 5) and not (running and a["running_var_estimator"] == "biased")
    if runner_id == "keras":
        return not (running and (a["momentum"] is None or a["running_var_estimator"] == "unbiased"))
    return True


def grid(runner, *, full: bool = False) -> Iterator[tuple[str, Any, bool]]:
    """(label, case, expressible) for every (op, mode, dtype) the runner declares.

    Default: the first configuration the runner can express of each op/mode in every dtype, each
    further one in one dtype (rotating), so every op, mode and dtype is covered; `full`: every
    configuration in every dtype. Configurations `supports` refuses are left out (the `supports`
    tests cover them); those it accepts but `run` must refuse (`expressible` False) come once.
    """
    dts = runner.dtypes
    for op, modes in runner.ops.items():
        for mode in modes:
            i = 0
            for shape, attrs, kw in _configs(op, mode):
                if runner.supports(op, mode, dts[0], attrs) is not None:
                    continue
                ok = expressible(runner.id, make(op, mode, dts[0], shape, attrs, **kw))
                chosen = dts if (full or (ok and i == 0)) else (dts[i % len(dts)],)
                i += ok
                for dtype in chosen:
                    if runner.supports(op, mode, dtype, attrs) is not None:
                        continue
                    case = make(op, mode, dtype, shape, attrs, **kw)
                    yield f"{op}/{mode}/{dtype}/{shape}/{_short(attrs)}/{_short(kw)}", case, ok


def _short(d: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(d.items()))


def _configs(op: str, mode: str):
    """(shape, attrs, make kwargs) triples for one op/mode."""
    if op == "batch_norm":
        out = []
        for layout, shape in (("channels_first", (4, 3, 2, 5)), ("channels_last", (3, 2, 5, 4)),
                              ("channels_first", (6, 4)), ("channels_last", (2, 3, 2, 2, 3)),
                              ("channels_first", (3, 2, 4))):
            base = {"eps": BN_EPS, "layout": layout}
            if mode in ("training", "training_steps"):
                convs = [{"momentum": 0.1, "momentum_on": "batch", "running_var_estimator": "unbiased"},
                         {"momentum": 0.9, "momentum_on": "running", "running_var_estimator": "biased"}]
                if layout == "channels_first" and len(shape) == 4:  # the other conventions on one shape
                    convs += [{"momentum": None, "momentum_on": "batch", "running_var_estimator": "unbiased",
                               "num_batches_tracked": 2},
                              {"momentum": 0.3, "momentum_on": "batch", "running_var_estimator": "biased"},
                              {"momentum": 0.8, "momentum_on": "running", "running_var_estimator": "unbiased"}]
                for conv in convs:
                    out.append((shape, {**base, **conv}, {}))
                if mode == "training":
                    out.append((shape, base, {"running": False}))
            else:
                out.append((shape, base, {}))
        out.append(((4, 3, 2, 2), {"eps": 1e-5, "layout": "channels_first"}, {"gamma": False, "beta": False}))
        out.append(((4, 2, 2, 3), {"eps": 1e-5, "layout": "channels_last"}, {"beta": False, "tparams": False}))
        return out
    if op == "layer_norm":
        return [((3, 8), {"eps": 1e-5, "normalized_ndim": 1}, {}),
                ((2, 3, 4), {"eps": 1e-3, "normalized_ndim": 2}, {}),
                ((2, 3, 4), {"eps": 1e-5, "axis": -1}, {"gamma": False, "beta": False}),
                ((5, 6), {"eps": 1e-5, "normalized_ndim": 1}, {"beta": False, "tparams": False})]
    if op == "rms_norm":
        return [((3, 8), {"eps": 1e-6, "normalized_ndim": 1}, {}),
                ((2, 3, 4), {"eps": 1e-5, "normalized_ndim": 2}, {}),
                ((4, 5), {"eps": 1e-6, "axis": -1}, {"gamma": False})]
    if op == "group_norm":
        return [((2, 6, 3, 2), {"eps": 1e-5, "num_groups": 3, "layout": "channels_first"}, {}),
                ((2, 3, 2, 6), {"eps": 1e-5, "num_groups": 2, "layout": "channels_last"}, {}),
                ((3, 8), {"eps": 1e-3, "num_groups": 4, "layout": "channels_first"}, {}),
                ((2, 4, 6), {"eps": 1e-5, "num_groups": 3, "layout": "channels_last"}, {"beta": False}),
                ((2, 6, 4), {"eps": 1e-5, "num_groups": 3, "layout": "channels_first", "affine": "per_group"}, {}),
                ((2, 4, 6), {"eps": 1e-5, "num_groups": 2, "layout": "channels_last", "affine": "per_group"}, {})]
    if op == "instance_norm":
        return [((2, 3, 4, 2), {"eps": 1e-5, "layout": "channels_first"}, {}),
                ((2, 4, 2, 3), {"eps": 1e-5, "layout": "channels_last"}, {}),
                ((3, 2, 6), {"eps": 1e-3, "layout": "channels_first"}, {"gamma": False, "beta": False})]
    if op == "mvn":
        return [((3, 2, 4, 2), {"eps": 1e-9, "axes": (0, 2, 3), "eps_mode": "inside"}, {}),
                ((4, 6), {"eps": 1e-5, "axes": (1,), "eps_mode": "inside"}, {}),
                ((2, 3, 4), {"eps": 1e-9, "axes": (0, 2), "eps_mode": "none"}, {})]
    if op == "l2_normalize":
        return [((3, 8), {"eps": 1e-12, "axes": (-1,), "eps_mode": "max_sumsq"}, {}),
                ((2, 3, 4), {"eps": 1e-12, "axes": (1, 2), "eps_mode": "max_sumsq"}, {}),
                ((4, 5), {"eps": 1e-12, "axes": (0,), "eps_mode": "max_norm"}, {}),
                ((2, 3, 4), {"eps": 1e-12, "axes": (0, 2), "eps_mode": "max_norm"}, {}),
                ((4, 5), {"eps": 0.0, "axes": (1,), "eps_mode": "none"}, {})]
    return []
