"""Calibration table of the error model: the largest error/bound the honest implementations reach.

Runs the generation of tests/oracles/test_calibration.py (`tests/oracles/regimes.py`) for every
honest implementation of `tests/oracles/honest.py` and prints the largest error/bound reached per
(implementation, dtype), per (regime, dtype) and per (op, dtype), the overall maximum and the case
that reached it (op, mode, dtype, regime and the seed that rebuilds it with `make_inputs`).

Every implementation sees the same cases: case j draws (op, mode), dtype and regime uniformly from
numpy.random.default_rng([seed, j]), then a case seed s; its inputs are
`make_inputs(op, mode, dtype, regime, numpy.random.default_rng(s), max_elements=...)`. The oracle is
evaluated once per case.

    .venv/bin/python benchmarks/calibration.py --cases-per-impl 2000 --seed 0

A value <= 1 everywhere is the calibration's claim; "inf" marks a NaN-pattern difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import oracles  # noqa: E402
from tests.oracles.honest import HONEST  # noqa: E402
from tests.oracles.regimes import DTYPE_NAMES, REGIMES, make_inputs  # noqa: E402

MODES = oracles.modes()


def draw_case(seed: int, j: int) -> tuple[str, str, str, str, int]:
    """(op, mode, dtype, regime, case seed) of case j."""
    rng = np.random.default_rng([seed, j])
    op, mode = MODES[int(rng.integers(len(MODES)))]
    dtype = DTYPE_NAMES[int(rng.integers(len(DTYPE_NAMES)))]
    regime = REGIMES[int(rng.integers(len(REGIMES)))]
    return op, mode, dtype, regime, int(rng.integers(2**32))


def run_chunk(args: tuple[int, range, int, tuple[str, ...]]) -> list[tuple]:
    """Rows (j, op, mode, dtype, regime, case seed, impl, max ratio, output, fraction of output
    elements with an infinite bound) for cases `js`."""
    seed, js, max_elements, names = args
    warnings.simplefilter("ignore")
    rows = []
    for j in js:
        op, mode, dtype, regime, s = draw_case(seed, j)
        inputs, attrs = make_inputs(op, mode, dtype, regime, np.random.default_rng(s), max_elements=max_elements)
        ev = oracles.evaluate(op, mode, inputs, attrs, dtype)
        size = sum(b.size for b in ev.bounds.values())
        free = sum(int(np.isinf(b).sum()) for b in ev.bounds.values()) / max(size, 1)
        for name in names:
            out = HONEST[name](op, mode, inputs, attrs, dtype)
            worst, where = 0.0, ""
            for k, r in ev.ratios(out, dtype).items():
                m = float(np.max(r)) if r.size else 0.0
                if m > worst or (np.isnan(m) and not np.isnan(worst)):
                    worst, where = m, k
            rows.append((j, op, mode, dtype, regime, s, name, worst, where, free))
    return rows


def fmt(v: float | None) -> str:
    """Ratios >= 0.1 truncated to 4 decimals (0.99999 shows as 0.9999, never as 1), else 3 digits."""
    if v is None:
        return "-"
    if not np.isfinite(v) or v > 1e4:
        return f"{v:.3g}"
    return f"{np.floor(v * 1e4) / 1e4:.4f}" if v >= 0.1 else f"{v:.3g}"


def table(title: str, cells: dict, rows: list[str], cols: list[str]) -> str:
    width = max(len(r) for r in rows) + 2
    lines = [title, " " * width + "".join(f"{c:>11s}" for c in cols)]
    for r in rows:
        lines.append(f"{r:<{width}s}" + "".join(f"{fmt(cells.get((r, c))):>11s}" for c in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases-per-impl", type=int, default=2000, help="cases per implementation (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-elements", type=int, default=20_000, help="largest case (elements, default 20000)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--impl", action="append", choices=sorted(HONEST), help="only these implementations")
    a = ap.parse_args(argv)
    names = tuple(a.impl or sorted(HONEST))
    n = a.cases_per_impl
    chunk = max(1, min(100, n // (4 * max(a.jobs, 1)) or 1))
    tasks = [(a.seed, range(i, min(i + chunk, n)), a.max_elements, names) for i in range(0, n, chunk)]
    t0 = time.time()
    rows: list[tuple] = []
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as ex:
            for r in ex.map(run_chunk, tasks):
                rows.extend(r)
    else:
        for t in tasks:
            rows.extend(run_chunk(t))
    elapsed = time.time() - t0

    by_impl, by_regime, by_op = {}, {}, {}
    count = defaultdict(int)
    free_sum, free_n = defaultdict(float), defaultdict(int)
    for j, op, mode, dtype, regime, s, name, worst, _, free in rows:
        free_sum[(regime, dtype)] += free
        free_n[(regime, dtype)] += 1
        for cells, key in ((by_impl, (name, dtype)), (by_regime, (regime, dtype)), (by_op, (op, dtype))):
            cells[key] = max(cells.get(key, 0.0), worst)
        count[dtype] += 1
    cols = list(DTYPE_NAMES)
    print(f"calibration: {n} cases x {len(names)} implementations, seed {a.seed}, "
          f"max_elements {a.max_elements}, {elapsed:.0f} s")
    print("cases per dtype (x implementations): " + ", ".join(f"{d} {count[d] // len(names)}" for d in cols))
    print()
    print(table("largest error/bound per implementation and dtype", by_impl, list(names), cols))
    print()
    print(table("largest error/bound per regime and dtype (all implementations)", by_regime, list(REGIMES), cols))
    print()
    ops = sorted({r[1] for r in rows})
    print(table("largest error/bound per op and dtype (all implementations)", by_op, ops, cols))
    print()
    frac = {k: free_sum[k] / free_n[k] for k in free_n}
    print(table("mean fraction of output elements left unconstrained (bound = inf) per regime and dtype",
                frac, list(REGIMES), cols))
    print()
    worst = max(rows, key=lambda r: (np.nan_to_num(r[7], nan=np.inf), -r[0]))
    print(f"overall maximum error/bound: {worst[7]!r}")
    over = [r for r in rows if not r[7] <= 1]
    print(f"  reached by {worst[6]} on {worst[1]}/{worst[2]} {worst[3]} "
          f"regime={worst[4]} output={worst[8]!r}; case {worst[0]}, make_inputs seed {worst[5]}")
    print(f"cases above 1: {len(over)}")
    for r in over[:20]:
        print(f"  {r[6]} {r[1]}/{r[2]} {r[3]} regime={r[4]} seed={r[5]} output={r[8]!r} ratio={r[7]:.4g}")
    return 0 if not over else 1


if __name__ == "__main__":
    sys.exit(main())
