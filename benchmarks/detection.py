"""Time to each bucket: how soon campaigns at two `--pack` settings find each of their buckets.

    .venv/bin/python benchmarks/detection.py                         # every op, packs 1 and 64, seeds 0,1,2, 60 s (~17 min)
    .venv/bin/python benchmarks/detection.py --ops group_norm,rms_norm --seeds 0,1 --budget 30 --json det.json

Cases per second is what `benchmarks/throughput.py` measures; buckets per second is what a nightly
campaign is for, and packing trades one for the other: a packed family runs many cases of one
Hypothesis example (one shape, regime and parameter draw), so it multiplies cases, not examples
(`normfuzz selftest --pack 64` catches 57 of 63 bug-zoo variants later in seconds than `--pack 1`).
This script measures the trade on the real frameworks.

For each op (the throughput benchmark's small-case campaign: its mode, float32, the three framework
runners, every regime but "long", `--no-minimize`), each seed of `--seeds` and each of the two
`--packs`, a one-core `--jobs 1` campaign runs for `--budget` seconds; the two packs of a seed run at
once, each pinned to a core of its own, so that both see the same machine. From each campaign's
database, per bucket: the seconds from the end of the campaign's start-up (the workers' framework
imports, done before the first case) to the bucket's first finding, i.e. buckets.first_seen -
campaign.started_at - startup_seconds.

Printed per op and pack: the cases run (mean over seeds), the buckets found per seed and in all
seeds together, and the (seed, bucket) pairs found by this pack only; then, over the (seed, bucket)
pairs both packs found, how often each found the bucket first and the median of the ratio of their
times (second pack's / first pack's). The JSON holds every campaign's buckets and times.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import (DTYPE, MODES, bench_regimes, bench_runners, normfuzz_cmd, ops_argument,  # noqa: E402
                        run_monitored, two_cpus)

#: A bucket found within this many seconds of the other pack's time counts as found at the same time.
TIE_SECONDS = 0.05


def _timestamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def buckets_found(out: str | Path) -> tuple[dict[str, float], int]:
    """({bucket key: seconds from the end of start-up to its first finding}, cases run) of the
    campaign in folder `out`."""
    db = Path(out) / "findings.sqlite"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        started, extra, cases = con.execute("SELECT started_at, extra, cases_run FROM campaign").fetchone()
        t0 = _timestamp(started) + float(json.loads(extra or "{}").get("startup_seconds", 0.0))
        found = {k: _timestamp(first) - t0
                 for k, first in con.execute("SELECT key, first_seen FROM buckets WHERE count > 0")}
    return found, int(cases)


def campaign(op: str, pack: int, seed: int, budget: float, cpu: int, work: str) -> dict[str, Any]:
    """One one-core campaign of `op` at `--pack pack`, pinned to `cpu`: its buckets and their times."""
    mode = MODES[op]
    out = tempfile.mkdtemp(prefix=f"normfuzz-detect-{op}-p{pack}-s{seed}-", dir=work)
    cmd = normfuzz_cmd() + ["campaign", "--out", out, "--budget", f"{budget:g}s", "--ops", op, "--modes", mode,
                            "--dtypes", DTYPE, "--runners", ",".join(bench_runners(op, mode)),
                            "--regimes", ",".join(bench_regimes()), "--no-minimize", "--no-report", "--quiet",
                            "--seed", str(seed), "--jobs", "1", "--pack", str(pack)]
    try:
        res = run_monitored(cmd, cpus=[cpu], timeout=budget + 900)
        if res["rc"] not in (0, 1):
            raise RuntimeError(f"{' '.join(cmd)} exited with {res['rc']}:\n{(res['stderr'] or '')[-2000:]}")
        found, cases = buckets_found(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"op": op, "pack": pack, "seed": seed, "cases": cases, "buckets": found}


def compare(runs: dict[tuple[int, int], dict], packs: Sequence[int], seeds: Sequence[int]) -> dict[str, Any]:
    """The per-pack and head-to-head figures of one op (module docstring)."""
    a, b = packs
    per_pack = {}
    for p in packs:
        sets = [set(runs[(p, s)]["buckets"]) for s in seeds]
        other = a if p == b else b
        per_pack[p] = {"cases": statistics.mean(runs[(p, s)]["cases"] for s in seeds),
                       "per_seed": [len(x) for x in sets], "union": len(set().union(*sets)),
                       "only": sum(len(set(runs[(p, s)]["buckets"]) - set(runs[(other, s)]["buckets"])) for s in seeds)}
    times = [(runs[(a, s)]["buckets"][k], runs[(b, s)]["buckets"][k]) for s in seeds
             for k in runs[(a, s)]["buckets"] if k in runs[(b, s)]["buckets"]]
    ratios = [max(tb, TIE_SECONDS) / max(ta, TIE_SECONDS) for ta, tb in times]
    return {"packs": list(packs), "per_pack": per_pack, "common": len(times),
            "first": {a: sum(ta + TIE_SECONDS < tb for ta, tb in times),
                      b: sum(tb + TIE_SECONDS < ta for ta, tb in times)},
            "median_ratio": statistics.median(ratios) if ratios else None}


def format_op(op: str, c: dict[str, Any]) -> str:
    a, b = c["packs"]
    lines = [f"{op}:"]
    for p in (a, b):
        f = c["per_pack"][p]
        lines.append(f"  --pack {p:<4} cases {f['cases']:>9.0f}  buckets per seed {f['per_seed']}  all seeds "
                     f"{f['union']}  found by this pack only {f['only']}")
    med = "n/a" if c["median_ratio"] is None else f"{c['median_ratio']:.2f}"
    lines.append(f"  both found {c['common']} (seed, bucket) pairs: first at --pack {a} {c['first'][a]}, at --pack {b} "
                 f"{c['first'][b]}, the same time {c['common'] - c['first'][a] - c['first'][b]}; median time "
                 f"--pack {b} / --pack {a}: {med}")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return vals


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default=",".join(MODES), help="comma list (default: every op of the throughput benchmark)")
    p.add_argument("--packs", type=_ints, default=[1, 64], help="the two --pack settings (default 1,64)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="campaign seeds (default 0,1,2)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds of each campaign (default 60)")
    p.add_argument("--json", metavar="FILE", help="also write every campaign's buckets and times as JSON")
    a = p.parse_args(argv)
    ops = ops_argument(p, a.ops)
    if len(a.packs) != 2 or min(a.packs) < 1 or a.packs[0] == a.packs[1]:
        p.error("--packs takes two different settings >= 1, e.g. 1,64")
    if a.budget <= 0:
        p.error("--budget must be positive")
    cpus = two_cpus("detection", " (the two packs of a seed run at once)")
    if cpus is None:
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="normfuzz-detect-") as work:
        for op in ops:
            runs = {}
            for seed in a.seeds:
                with ThreadPoolExecutor(2) as ex:  # (each thread waits on its own subprocess)
                    done = list(ex.map(lambda pc: campaign(op, pc[0], seed, a.budget, pc[1], work),
                                       zip(a.packs, cpus)))
                for r in done:
                    runs[(r["pack"], seed)] = r
            c = compare(runs, a.packs, a.seeds)
            print(format_op(op, c), flush=True)
            rows.append({"op": op, **c, "campaigns": list(runs.values())})
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
