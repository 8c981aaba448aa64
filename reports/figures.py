"""SVG figures made in Python (no plotting library): inline in the page, readable without scripts.

- `ratio_histogram`: the distribution of error/bound (log10) over a bucket's findings;
- `ratio_heatmap`: per-element error/bound of one output of the minimal case;
- `output_scatter`: the runner's output against the oracle's reference, with each element's bound.

Every label goes through `el` (escaped); numbers are formatted here. Figures return `Markup` of an
`<svg>` element with a `<title>`, sized by its viewBox and scaled by CSS.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .html import Markup, el, fmt_num, fmt_ratio

__all__ = ["ratio_histogram", "ratio_heatmap", "output_scatter", "ratio_colour", "HEATMAP_MAX_CELLS",
           "SCATTER_MAX_POINTS"]

FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:11px"
AXIS = "#555"
GRID = "#e3e3e3"
BAD = "#c62828"
OK = "#1565c0"
NANC = "#111"
UNCONSTRAINED = "#bdbdbd"
#: Largest heatmap side in cells; bigger outputs are max-pooled into blocks.
HEATMAP_MAX_CELLS = 32
#: Most points a scatter draws (the worst elements are always kept), and how many get a tooltip.
SCATTER_MAX_POINTS = 300
SCATTER_TITLED = 60


def _svg(width: int, height: int, title: str, *body, cls: str = "fig") -> Markup:
    return el("svg", el("title", title), *body, xmlns="http://www.w3.org/2000/svg", viewBox=f"0 0 {width} {height}",
              width=width, height=height, class_=cls, role="img", aria_label=title, style=FONT)


def _text(x: float, y: float, s: str, *, anchor: str = "middle", fill: str = AXIS, size: int | None = None,
          rotate: bool = False, weight: str | None = None) -> Markup:
    attrs = {"x": f"{x:.1f}", "y": f"{y:.1f}", "text_anchor": anchor, "fill": fill}
    if size:
        attrs["font_size"] = size
    if weight:
        attrs["font_weight"] = weight
    if rotate:
        attrs["transform"] = f"rotate(-90 {x:.1f} {y:.1f})"
    return el("text", s, **attrs)


def _line(x1, y1, x2, y2, stroke=AXIS, width=1.0, dash: str | None = None) -> Markup:
    return el("line", x1=f"{x1:.1f}", y1=f"{y1:.1f}", x2=f"{x2:.1f}", y2=f"{y2:.1f}", stroke=stroke,
              stroke_width=width, stroke_dasharray=dash)


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    step = _nice_step(hi - lo, target)
    start = math.ceil(lo / step) * step
    out, t = [], start
    while t <= hi + step * 1e-9 and len(out) < 50:
        out.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return out


def _tick_digits(ticks: list[float]) -> int:
    """Significant digits that tell neighbouring ticks apart (at least 3)."""
    if len(ticks) < 2:
        return 4
    step = abs(ticks[1] - ticks[0])
    big = max(abs(t) for t in ticks)
    if step == 0 or big == 0:
        return 3
    return int(min(max(3, math.ceil(math.log10(big / step)) + 2), 12))


# --------------------------------------------------------------------------------------------------
# Histogram of error/bound over a bucket's findings


def ratio_histogram(ratios: Sequence[float | None], *, title: str = "error/bound over the bucket's findings"
                    ) -> Markup:
    """Histogram of log10(error/bound) of `ratios` (one per finding), with the bound (ratio 1) marked.

    Ratios that are not positive and finite get their own bars: 0 (exact), inf (a NaN/Inf pattern
    difference) and n/a (no comparison: the runner raised, crashed, ...).
    """
    finite = [float(r) for r in ratios if r is not None and math.isfinite(float(r)) and float(r) > 0]
    zero = sum(1 for r in ratios if r is not None and float(r) == 0.0)
    inf = sum(1 for r in ratios if r is not None and math.isinf(float(r)))
    na = sum(1 for r in ratios if r is None or math.isnan(float(r)))
    W, H, L, R, T, B = 400, 190, 40, 10, 16, 40
    extra = [(lab, n) for lab, n in (("0", zero), ("inf", inf), ("n/a", na)) if n]
    extra_w = 34 * len(extra) + (10 if extra else 0)
    plot_w = W - L - R - extra_w
    bars: list[tuple[float, float, int]] = []  # (x0, x1) in log10 units, count
    if finite:
        logs = np.log10(np.asarray(finite))
        lo, hi = float(logs.min()), float(logs.max())
        lo, hi = min(lo, -0.25), max(hi, 0.25)  # always show the bound line inside the range
        width = _nice_step(hi - lo, 16)
        lo = math.floor(lo / width) * width
        hi = math.ceil(hi / width) * width
        edges = np.arange(lo, hi + width / 2, width)
        counts, _ = np.histogram(logs, bins=edges)
        bars = [(float(edges[i]), float(edges[i + 1]), int(c)) for i, c in enumerate(counts)]
    else:
        lo, hi = -1.0, 1.0
    top = max([c for *_, c in bars] + [n for _, n in extra] + [1])
    sy = (H - T - B) / top

    def xs(v: float) -> float:
        return L + (v - lo) / (hi - lo) * plot_w

    body = []
    for t in _ticks(0, top, 4):  # horizontal grid and counts
        y = H - B - t * sy
        if t != int(t):
            continue
        body.append(_line(L, y, L + plot_w + extra_w, y, stroke=GRID))
        body.append(_text(L - 5, y + 4, str(int(t)), anchor="end"))
    for x0, x1, c in bars:
        if c:
            colour = BAD if x0 >= 0 else OK
            body.append(el("rect", el("title", f"error/bound in [{10 ** x0:.3g}, {10 ** x1:.3g}): {c}"),
                           x=f"{xs(x0) + 0.5:.1f}", y=f"{H - B - c * sy:.1f}",
                           width=f"{max(xs(x1) - xs(x0) - 1, 1):.1f}", height=f"{c * sy:.1f}", fill=colour,
                           fill_opacity="0.8"))
    for t in _ticks(lo, hi, 6):
        if abs(t - round(t)) < 1e-9:
            x = xs(t)
            body.append(_line(x, H - B, x, H - B + 4))
            body.append(_text(x, H - B + 15, f"1e{int(round(t))}" if round(t) not in (0, 1) else
                              ("1" if round(t) == 0 else "10")))
    xb = xs(0.0)
    body.append(_line(xb, T - 4, xb, H - B, stroke=BAD, dash="4 3", width=1.2))
    body.append(_text(xb + 3, T + 4, "bound", anchor="start", fill=BAD))
    x = L + plot_w + 10
    for lab, n in extra:
        body.append(el("rect", el("title", f"error/bound {lab}: {n}"), x=f"{x + 3:.1f}", y=f"{H - B - n * sy:.1f}",
                       width="26", height=f"{n * sy:.1f}", fill=NANC if lab == "inf" else UNCONSTRAINED))
        body.append(_text(x + 16, H - B + 15, lab))
        x += 34
    body.append(_line(L, H - B, L + plot_w + extra_w, H - B))
    body.append(_text(L + plot_w / 2, H - 6, "error / bound (log scale)"))
    body.append(_text(12, T + (H - T - B) / 2, "findings", rotate=True))
    n = len(ratios)
    return _svg(W, H, f"{title} ({n} finding{'s' if n != 1 else ''})", *body, cls="fig fig-hist")


# --------------------------------------------------------------------------------------------------
# Heatmap of per-element error/bound


def ratio_colour(r: float, nan_pattern: bool = False, unconstrained: bool = False) -> str:
    """Fill colour of one element: blue shades within the bound (darker toward 1), red beyond it
    (darker with log10 of the ratio up to 1e3), black for a NaN/Inf pattern difference, grey where
    the element is unconstrained (infinite bound)."""
    if unconstrained:
        return UNCONSTRAINED
    if nan_pattern or math.isinf(r) or math.isnan(r):
        return NANC
    if r <= 0:
        return "#ffffff"
    if r <= 1:
        t = min(max((math.log10(r) + 4) / 4, 0.0), 1.0)  # 1e-4 -> 0, 1 -> 1
        return _mix((255, 255, 255), (66, 133, 214), t)
    t = min(math.log10(r) / 3, 1.0)  # 1 -> 0, 1e3 -> 1
    return _mix((255, 183, 160), (150, 10, 10), t)


def _mix(a, b, t: float) -> str:
    return "#%02x%02x%02x" % tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _as_2d(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return int(np.prod(shape[:-1])), shape[-1]


def ratio_heatmap(name: str, ratio: np.ndarray, actual: np.ndarray, reference: np.ndarray, bound: np.ndarray
                  ) -> Markup:
    """Per-element error/bound of output `name` (arrays of one shape), as a grid: rows are the
    leading dimensions flattened, columns the last one; an output larger than `HEATMAP_MAX_CELLS`
    on a side is max-pooled (each cell shows its block's worst element). Every cell's tooltip
    gives index, value, reference, bound and ratio."""
    shape = tuple(ratio.shape)
    rows, cols = _as_2d(shape)
    r2 = np.asarray(ratio, dtype=np.float64).reshape(rows, cols)
    a2 = np.asarray(actual).reshape(rows, cols)
    ref2 = np.asarray(reference).reshape(rows, cols)  # extended precision kept for the tooltips
    b2 = np.asarray(bound).reshape(rows, cols)
    br = max(1, math.ceil(rows / HEATMAP_MAX_CELLS))
    bc = max(1, math.ceil(cols / HEATMAP_MAX_CELLS))
    gr, gc = math.ceil(rows / br), math.ceil(cols / bc)
    cell = max(6, min(28, int(320 / max(gr, gc))))
    L, T = 8, 8
    W = max(L + gc * cell + 8, 200)
    H = T + gr * cell + 34
    body = []
    pattern = np.isnan(a2) ^ np.isnan(ref2)
    unconstrained = np.isinf(b2)
    for i in range(gr):
        for j in range(gc):
            blk = r2[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
            # the block's worst element (NaN-pattern first, then the largest ratio)
            key = np.where(np.isnan(blk), np.inf, blk)
            k = np.unravel_index(int(np.argmax(key)), blk.shape)
            ii, jj = i * br + k[0], j * bc + k[1]
            flat = ii * cols + jj
            idx = list(np.unravel_index(flat, shape)) if shape else []
            rv = float(r2[ii, jj])
            fill = ratio_colour(rv, bool(pattern[ii, jj]), bool(unconstrained[ii, jj]))
            where = f"{name}{[int(v) for v in idx]}"
            if br > 1 or bc > 1:
                where += f" (worst of rows {i * br}..{min((i + 1) * br, rows) - 1}, columns {j * bc}..{min((j + 1) * bc, cols) - 1})"
            tip = (f"{where}: got {fmt_num(a2[ii, jj], 9)}, reference {fmt_num(ref2[ii, jj], 9)}, "
                   f"bound {fmt_num(b2[ii, jj], 3)}, error/bound {fmt_ratio(rv)}")
            body.append(el("rect", el("title", tip), x=L + j * cell, y=T + i * cell, width=cell - 1, height=cell - 1,
                           fill=fill, stroke="#999" if cell >= 10 else None, stroke_width="0.3"))
    # legend
    y = T + gr * cell + 8
    x = L
    for label, colour in (("1e-4", ratio_colour(1e-4)), ("0.1", ratio_colour(0.1)), ("1", ratio_colour(1.0)),
                          ("10", ratio_colour(10.0)), ("1e3", ratio_colour(1e3)), ("NaN", NANC),
                          ("free", UNCONSTRAINED)):
        body.append(el("rect", el("title", {"NaN": "a NaN/Inf pattern difference",
                                            "free": "unconstrained element (infinite bound)"}.get(
                                                label, f"error/bound {label}")),
                       x=x, y=y, width=10, height=10, fill=colour, stroke="#999", stroke_width="0.3"))
        body.append(_text(x + 12, y + 9, label, anchor="start", size=10))
        x += 12 + 6 * len(label) + 7
    W = max(W, x)
    pooled = f", {br}x{bc} blocks" if br > 1 or bc > 1 else ""
    dims = "x".join(str(d) for d in shape) or "scalar"
    return _svg(W, H, f"error/bound per element of {name} [{dims}]{pooled}", *body, cls="fig fig-heat")


# --------------------------------------------------------------------------------------------------
# Output against reference


def output_scatter(name: str, actual: np.ndarray, reference: np.ndarray, bound: np.ndarray, ratio: np.ndarray
                   ) -> Markup:
    """The runner's output (y) against the reference (x) for each element of output `name`: the
    diagonal is agreement, a grey bar at each element spans reference +- bound (what an honest
    implementation may return), a dot is the runner's value (red beyond the bound). Non-finite
    values are drawn as triangles on the top (+inf, NaN) or bottom (-inf) edge."""
    a_src, ref_src, b_src = (np.asarray(v).ravel() for v in (actual, reference, bound))
    with np.errstate(over="ignore"):  # extended-precision values beyond float64 plot at the edge
        a, ref, b = (v.astype(np.float64) for v in (a_src, ref_src, b_src))
        r = np.asarray(ratio).astype(np.float64).ravel()
    n = a.size
    keep = np.arange(n)
    if n > SCATTER_MAX_POINTS:  # the worst elements, then an even sample of the rest
        order = np.argsort(-np.where(np.isnan(r), np.inf, r), kind="stable")
        worst = order[: SCATTER_MAX_POINTS // 4]
        rest = np.setdiff1d(np.arange(n), worst)
        step = max(1, -(-len(rest) // (SCATTER_MAX_POINTS - len(worst))))  # ceil: at most the cap
        keep = np.union1d(worst, rest[::step])
    # tooltips for the worst points only (they dominate the figure's size)
    order = np.argsort(-np.where(np.isnan(r), np.inf, r)[keep], kind="stable")
    titled = set(int(i) for i in keep[order[:SCATTER_TITLED]])
    W, H, L, R, T, B = 320, 250, 64, 12, 12, 40
    vals = np.concatenate([a[keep][np.isfinite(a[keep])], ref[keep][np.isfinite(ref[keep])]])
    if vals.size == 0:
        lo, hi = -1.0, 1.0
    else:
        lo, hi = float(vals.min()), float(vals.max())
    if hi - lo <= 1e-300 * max(1.0, abs(hi)) or hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    else:
        pad = (hi - lo) * 0.06
        lo, hi = lo - pad, hi + pad
    pw, ph = W - L - R, H - T - B

    def X(v: float) -> float:
        return L + (v - lo) / (hi - lo) * pw

    def Y(v: float) -> float:
        return T + ph - (v - lo) / (hi - lo) * ph

    body = [el("rect", x=L, y=T, width=pw, height=ph, fill="#fafafa", stroke=GRID)]
    ticks = _ticks(lo, hi, 4)
    digits = _tick_digits(ticks)
    for t in ticks:
        body.append(_line(X(t), T + ph, X(t), T + ph + 4))
        body.append(_text(X(t), T + ph + 15, fmt_num(t, digits)))
        body.append(_line(L - 4, Y(t), L, Y(t)))
        body.append(_text(L - 6, Y(t) + 4, fmt_num(t, digits), anchor="end"))
    body.append(_line(X(lo), Y(lo), X(hi), Y(hi), stroke="#9e9e9e", dash="3 3"))
    for k in keep:
        rv, av, fv, bv = float(r[k]), float(a[k]), float(ref[k]), float(b[k])
        tip = (f"{name} element {int(k)} (flat): got {fmt_num(a_src[k], 9)}, reference {fmt_num(ref_src[k], 9)}, "
               f"bound {fmt_num(b_src[k], 3)}, error/bound {fmt_ratio(rv)}") if k in titled else None
        bad = not (rv <= 1)
        if math.isfinite(fv) and math.isfinite(bv) and bv > 0:
            y0, y1 = max(min(Y(fv - bv), T + ph), T), max(min(Y(fv + bv), T + ph), T)
            body.append(_line(X(fv), y0, X(fv), y1, stroke="#9e9e9e", width=3))
        if math.isfinite(av) and math.isfinite(fv):
            body.append(el("circle", el("title", tip) if tip else None, cx=f"{X(fv):.1f}", cy=f"{Y(av):.1f}", r="3.2",
                           fill=BAD if bad else OK, fill_opacity="0.85"))
        else:  # a non-finite side: mark on the edge at the reference (or the value) position
            xv = fv if math.isfinite(fv) else (av if math.isfinite(av) else (lo + hi) / 2)
            x = X(min(max(xv, lo), hi))
            down = av == -math.inf
            y = T + ph - 2 if down else T + 2
            pts = f"{x - 4:.1f},{y + (-6 if down else 6):.1f} {x + 4:.1f},{y + (-6 if down else 6):.1f} {x:.1f},{y:.1f}"
            body.append(el("polygon", el("title", tip) if tip else None, points=pts, fill=NANC if bad else OK))
    body.append(_text(L + pw / 2, H - 6, f"reference {name}"))
    body.append(_text(14, T + ph / 2, f"runner {name}", rotate=True))
    shown = "" if len(keep) == n else f", {len(keep)} of {n} elements shown"
    return _svg(W, H, f"{name}: runner output against the reference (bar: reference ± bound){shown}", *body,
                cls="fig fig-scatter")
