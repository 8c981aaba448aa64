"""Float64 reference of every normfuzz op and mode, numpy only: the source embedded in repro scripts.

Each op is one generic normalization over the reduction axes R of a *working view* of its input (a
transpose and reshape that changes no value):

    c = x - mean_R(x)            centered ops        c = x     RMSNorm, L2 normalization, weight norm
    v = sum_R(c**2) / n          "mean" divisor      v = sum_R(c**2)   "sum" divisor (L2, weight norm)
    r = rscale(v, eps)           1/sqrt(v + eps) for eps "inside"; other conventions in `rscale`
    y = gamma * c * r + beta     gamma, beta broadcast per channel / group / element

computed in float64 with the corrected two-pass statistics (Chan, Golub and LeVeque 1983): the
variance is the biased (population) one. Gradients are closed forms: `vjp` gives dx, dgamma, dbeta
of sum(dy * y), `jvp` the tangent ty along (tx, tgamma, tbeta).

NaN and Inf follow IEEE arithmetic on these formulas: a NaN in a reduction set makes every output of
the set NaN; an infinity in a set of a centered op makes its outputs NaN too (x - mean is inf - inf)
but its mean the IEEE mean (inf, or NaN for both signs); in an uncentered op an infinity makes the
sum of squares inf and r = 0 (finite elements give 0, infinite ones NaN). Gradients of a set holding
a NaN or an infinity are NaN. BatchNorm inference (given statistics) is elementwise IEEE arithmetic.

Entry point: `reference(op, mode, inputs, attrs)` -> {output name: float64 array}, with normfuzz's
names (inputs in brackets are optional):

    batch_norm     inference       x, running_mean, running_var, [gamma], [beta]  -> y
                   training        x, [gamma], [beta], [running_mean, running_var]
                                   -> y, mean, var, rstd, [running_mean, running_var]
                   training_steps  xs (K batches), running_mean, running_var, [gamma], [beta]
                                   -> y, mean, var, running_mean, running_var, stacked over K
                   {inference,training}_vjp: + dy -> dx, [dgamma], [dbeta]
                   {inference,training}_jvp: + tx, [tgamma], [tbeta] -> ty
    layer_norm, group_norm, instance_norm   forward x, [gamma], [beta] -> y, mean, rstd; vjp; jvp
    rms_norm       forward x, [weight] -> y, rstd; vjp (dy -> dx, [dweight]); jvp (tx, [tweight])
    mvn, l2_normalize                       forward x -> y; vjp; jvp
    weight_norm    forward v, g -> w; vjp (dw -> dv, dg); jvp (tv, [tg] -> tw)

attrs (defaults in brackets): eps; layout [channels_first] | channels_last; BatchNorm momentum [0.1],
momentum_on ["batch": new = (1-m) old + m batch | "running": new = m old + (1-m) batch],
running_var_estimator ["unbiased": var * n/(n-1) | "biased"], num_batches_tracked [0] (momentum
None: cumulative average, m = 1/(num_batches_tracked + 1)); layer_norm/rms_norm normalized_ndim
(trailing dims) or axis; group_norm num_groups, affine ["per_channel" | "per_group"]; mvn axes
[(0, 2, 3)], eps [1e-9], eps_mode ["outside"]; l2_normalize axes [(-1,)], eps [1e-12], eps_mode
["max_norm"]; weight_norm dim [0] (norm over every other dim), eps [0], eps_mode ["none"].
"""

import numpy as np


def rscale(v, eps, mode):
    """The inverse scale r(v) for each way eps enters it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if mode == "inside":
            return 1 / np.sqrt(v + eps)  # BatchNorm, LayerNorm, GroupNorm, RMSNorm, ...
        if mode == "outside":
            return 1 / (np.sqrt(v) + eps)  # ONNX MeanVarianceNormalization's function body
        if mode == "max_norm":
            return 1 / np.maximum(np.sqrt(v), eps)  # torch.nn.functional.normalize
        if mode == "max_sumsq":
            return 1 / np.sqrt(np.maximum(v, eps))  # tf.math.l2_normalize
        return 1 / np.sqrt(v)  # "none": ONNX LpNormalization, weight norm


def rscale_dv(v, r, eps, mode):
    """dr/dv; 0 on the floor branch of the max conventions (taken at a tie)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if mode == "outside":
            return -0.5 * r * r / np.sqrt(v)
        if mode == "max_norm":
            return np.where(np.sqrt(v) > eps, -0.5 * r ** 3, 0.0)
        if mode == "max_sumsq":
            return np.where(v > eps, -0.5 * r ** 3, 0.0)
        return -0.5 * r ** 3  # "inside", "none"


class View:
    """An op's input x as the working array `w`: transposed by `perm` (channels_last -> first),
    reshaped to `shape`; statistics over `axes`, reported in `stat_shape`; parameters broadcast
    with shape `pshape`."""

    def __init__(self, x, perm, shape, axes, stat_shape, pshape, *, centered=True, divisor="mean",
                 eps_mode="inside"):
        xp = np.transpose(x, perm) if perm else np.asarray(x)
        self.perm, self.pre_shape, self.axes, self.stat_shape, self.pshape = perm, xp.shape, axes, stat_shape, pshape
        self.w = xp.astype(np.float64).reshape(shape)
        self.n = int(np.prod([self.w.shape[a] for a in axes]))
        self.centered, self.divisor, self.eps_mode = centered, divisor, eps_mode

    def to_work(self, a):  # an array shaped like x (dy, tx) into the working view
        a = np.asarray(a, dtype=np.float64)
        return (np.transpose(a, self.perm) if self.perm else a).reshape(self.w.shape)

    def back(self, a):  # a working-view array back to x's shape and layout
        a = a.reshape(self.pre_shape)
        return np.transpose(a, np.argsort(self.perm)) if self.perm else a

    def stat(self, s):  # a keepdims statistic in the reported shape
        shape = [1 if i in self.axes else d for i, d in enumerate(self.w.shape)]
        return np.broadcast_to(s, shape).reshape(self.stat_shape)

    def param(self, p):  # a parameter (or its tangent) into its broadcast shape
        return None if p is None else np.asarray(p, dtype=np.float64).reshape(self.pshape)

    def param_grad(self, full, shape):  # sum a full gradient over the parameter's broadcast axes
        axes = tuple(i for i, (a, b) in enumerate(zip(full.shape, self.pshape)) if b == 1 and a != 1)
        return np.sum(full, axis=axes, keepdims=True).reshape(shape)


def _cf_perm(ndim, layout):
    """(N, *spatial, C) -> (N, C, *spatial); None for channels_first."""
    assert layout in ("channels_first", "channels_last"), layout
    return None if layout == "channels_first" or ndim < 3 else (0, ndim - 1) + tuple(range(1, ndim - 1))


def make_view(op, x, a):
    """The working view of op's input x under attrs a (see the module docstring)."""
    x = np.asarray(x)
    if op in ("batch_norm", "instance_norm", "group_norm"):
        perm = _cf_perm(x.ndim, a.get("layout", "channels_first"))
        n, c = (x.shape[i] for i in (perm or range(x.ndim))[:2])
        if op == "batch_norm":  # per channel, over the batch and the spatial dims
            return View(x, perm, (n, c, -1), (0, 2), (c,), (1, c, 1))
        if op == "instance_norm":  # per sample and channel, over the spatial dims
            return View(x, perm, (n, c, -1), (2,), (n, c), (1, c, 1))
        g = a["num_groups"]  # per sample and group of c/g contiguous channels, over them and space
        assert c % g == 0, f"num_groups={g} does not divide channels={c}"
        pshape = (1, g, 1, 1) if a.get("affine", "per_channel") == "per_group" else (1, g, c // g, 1)
        return View(x, perm, (n, g, c // g, -1), (2, 3), (n, g), pshape)
    if op in ("layer_norm", "rms_norm"):  # over the trailing k dims
        k = a["normalized_ndim"] if a.get("normalized_ndim") is not None else x.ndim - a["axis"] % x.ndim
        q = int(np.prod(x.shape[x.ndim - k:]))
        return View(x, None, (-1, q), (1,), x.shape[:x.ndim - k], (1, q), centered=op == "layer_norm")
    if op in ("mvn", "l2_normalize"):  # over the given axes, no reshape, no parameters
        default = (0, 2, 3) if op == "mvn" else (-1,)
        axes = tuple(sorted(ax % x.ndim for ax in a.get("axes", default)))
        stat_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        if op == "mvn":
            return View(x, None, x.shape, axes, stat_shape, None, eps_mode=a.get("eps_mode", "outside"))
        return View(x, None, x.shape, axes, stat_shape, None, centered=False, divisor="sum",
                    eps_mode=a.get("eps_mode", "max_norm"))
    if op == "weight_norm":  # w = g * v / ||v||, the norm over every dim except `dim`
        dim = a.get("dim", 0) % x.ndim
        axes = tuple(i for i in range(x.ndim) if i != dim)  # none for a vector: ||v_i|| = |v_i|
        pshape = tuple(d if i == dim else 1 for i, d in enumerate(x.shape))
        return View(x, None, x.shape, axes, pshape, pshape, centered=False, divisor="sum",
                    eps_mode=a.get("eps_mode", "none"))
    raise ValueError(f"unknown op {op!r}")


def forward(vw, eps, gamma=None, beta=None, given=None):
    """Normalize the working view; `given=(mean, var)` uses fixed statistics (BatchNorm inference).
    Returns a dict of the intermediates (keepdims statistics m, v, r; c, xhat, y; `bad`: the sets
    holding a NaN or an inf, whose gradients are NaN)."""
    x, axes, n = vw.w, vw.axes, vw.n
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if given is not None:
            m, v = given
            bad = bad_grad = np.zeros((1,) * x.ndim, dtype=bool)
        else:  # the NaN rule (module docstring), which the arithmetic below mostly gives by itself
            bad_grad = ~np.all(np.isfinite(x), axis=axes, keepdims=True)  # a NaN or an inf in the set
            bad = bad_grad if vw.centered else np.any(np.isnan(x), axis=axes, keepdims=True)
            ns = n if vw.divisor == "mean" else 1
            if vw.centered:
                m = np.sum(x, axis=axes, keepdims=True) / n  # pass 1: the mean
                d = x - m  # pass 2: squares of the deviations, corrected by their sum's square
                sd = np.sum(d, axis=axes, keepdims=True)
                v = np.maximum((np.sum(d * d, axis=axes, keepdims=True) - sd * sd / n) / ns, 0.0)
            else:
                m = np.zeros((1,) * x.ndim)
                v = np.sum(x * x, axis=axes, keepdims=True) / ns
        r = rscale(v, eps, vw.eps_mode)
        c = x - m if vw.centered else x
        xhat = c * r
        y = xhat if gamma is None else xhat * gamma
        y = y if beta is None else y + beta
    nan = lambda t: np.where(bad, np.nan, t)  # noqa: E731
    return dict(m=m, v=nan(v), r=nan(r), c=c, xhat=nan(xhat), y=nan(y), bad=bad_grad, eps=eps,
                gamma=gamma, given=given is not None)


def vjp(vw, f, dy):
    """(dx, dgamma_full, dbeta_full) of sum(dy * y), working view. With z = gamma*dy, r' = dr/dv:
    dx = P(r z + r' sum_R(z c) 2c/n_s), P the centering over R (identity if uncentered);
    for eps "inside" that is r (z - mean(z) - xhat mean(z xhat)). Given statistics: dx = r z."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = dy if f["gamma"] is None else dy * f["gamma"]
        if f["given"]:
            dx = f["r"] * z
        else:
            ns = vw.n if vw.divisor == "mean" else 1
            rp = rscale_dv(f["v"], f["r"], f["eps"], vw.eps_mode)
            t = f["r"] * z + rp * np.sum(z * f["c"], axis=vw.axes, keepdims=True) * (2 * f["c"] / ns)
            dx = t - np.mean(t, axis=vw.axes, keepdims=True) if vw.centered else t
            dx = np.where(f["bad"], np.nan, dx)
        return dx, dy * np.where(f["bad"], np.nan, f["xhat"]), dy


def jvp(vw, f, tx, tgamma=None, tbeta=None):
    """Tangent of y along (tx, tgamma, tbeta), working view: dc = P(tx), dv = 2/n_s sum_R(c dc),
    ty = gamma (dc r + c r' dv) + tgamma xhat + tbeta."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if f["given"]:
            d = tx * f["r"]
        else:
            ns = vw.n if vw.divisor == "mean" else 1
            dc = tx - np.mean(tx, axis=vw.axes, keepdims=True) if vw.centered else tx
            dv = (2.0 / ns) * np.sum(f["c"] * dc, axis=vw.axes, keepdims=True)
            d = dc * f["r"] + f["c"] * rscale_dv(f["v"], f["r"], f["eps"], vw.eps_mode) * dv
        ty = d if f["gamma"] is None else d * f["gamma"]
        ty = ty if tgamma is None else ty + tgamma * f["xhat"]
        ty = ty if tbeta is None else ty + tbeta
        return ty if f["given"] else np.where(f["bad"], np.nan, ty)


# names of each op's input, output and parameters (gamma, beta) in normfuzz cases
_NAMES = {"weight_norm": ("v", "w", "g", None), "rms_norm": ("x", "y", "weight", None),
          "mvn": ("x", "y", None, None), "l2_normalize": ("x", "y", None, None)}
_STATS = {"layer_norm": ("mean", "rstd"), "group_norm": ("mean", "rstd"),
          "instance_norm": ("mean", "rstd"), "rms_norm": ("rstd",)}
_DEFAULT_EPS = {"mvn": 1e-9, "l2_normalize": 1e-12, "weight_norm": 0.0}


def _bn_training_step(x, ins, a, rm, rv, step):
    """One BatchNorm training step: y and batch statistics, running statistics updated."""
    vw = make_view("batch_norm", x, a)
    f = forward(vw, a["eps"], vw.param(ins.get("gamma")), vw.param(ins.get("beta")))
    out = {"y": vw.back(f["y"]), "mean": vw.stat(f["m"]), "var": vw.stat(f["v"]), "rstd": vw.stat(f["r"])}
    if rm is not None:
        n = vw.n  # the running variance stores var * n/(n-1) ("unbiased"; inf at n = 1) or var ("biased")
        with np.errstate(divide="ignore"):
            factor = np.float64(n) / (n - 1) if a.get("running_var_estimator", "unbiased") == "unbiased" else 1.0
        m, on = a.get("momentum", 0.1), a.get("momentum_on", "batch")
        if m is None:  # cumulative average over the batches seen
            w = 1.0 / (a.get("num_batches_tracked", 0) + step + 1)
        else:  # w: the weight of the batch statistic
            w = float(m) if on == "batch" else 1.0 - float(m)
        with np.errstate(invalid="ignore", over="ignore"):
            out["running_mean"] = (1 - w) * np.asarray(rm, np.float64) + w * out["mean"]
            out["running_var"] = (1 - w) * np.asarray(rv, np.float64) + w * (out["var"] * factor)
    return out


def reference(op, mode, inputs, attrs):
    """Float64 reference outputs of one normfuzz case: {output name: array} (module docstring)."""
    ins = {k: np.asarray(v) for k, v in inputs.items()}
    a = dict(attrs)
    a["eps"] = float(a.get("eps", _DEFAULT_EPS.get(op, 0.0)))
    if op == "batch_norm" and mode == "training_steps":
        rm, rv, steps = ins["running_mean"], ins["running_var"], []
        for k in range(ins["xs"].shape[0]):
            s = _bn_training_step(ins["xs"][k], ins, a, rm, rv, k)
            steps.append(s)
            rm, rv = s["running_mean"], s["running_var"]
        return {k: np.stack([s[k] for s in steps]) for k in ("y", "mean", "var", "running_mean", "running_var")}
    if op == "batch_norm" and mode == "training":
        rm, rv = ins.get("running_mean"), ins.get("running_var")
        assert (rm is None) == (rv is None), "give both running_mean and running_var, or neither"
        return _bn_training_step(ins["x"], ins, a, rm, rv, 0)
    x_name, y_name, g_name, b_name = _NAMES.get(op, ("x", "y", "gamma", "beta"))
    state, kind = ("", mode) if op != "batch_norm" else (mode.partition("_")[0], mode.partition("_")[2] or "forward")
    vw = make_view(op, ins[x_name], a)
    gamma, beta = vw.param(ins.get(g_name)), vw.param(ins.get(b_name))
    given = None
    if state == "inference":  # BatchNorm with fixed running statistics
        c = vw.w.shape[1]
        given = tuple(np.asarray(ins[k], np.float64).reshape(1, c, 1) for k in ("running_mean", "running_var"))
    f = forward(vw, a["eps"], gamma, beta, given)
    if kind == "forward":
        out = {y_name: vw.back(f["y"])}
        for name in _STATS.get(op, ()):
            out[name] = vw.stat(f["m"] if name == "mean" else f["r"])
        return out
    if kind == "vjp":
        dx, dg, db = vjp(vw, f, vw.to_work(ins["d" + y_name]))
        out = {"d" + x_name: vw.back(dx)}
        for name, full in ((g_name, dg), (b_name, db)):
            if name in ins:
                out["d" + name] = vw.param_grad(full, ins[name].shape)
        return out
    tg = vw.param(ins.get("t" + g_name)) if g_name else None
    tb = vw.param(ins.get("t" + b_name)) if b_name else None
    return {"t" + y_name: vw.back(jvp(vw, f, vw.to_work(ins["t" + x_name]), tg, tb))}
