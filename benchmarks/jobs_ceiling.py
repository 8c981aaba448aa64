"""How much of two cores `--jobs 2` gets, against what two cores give at all.

    .venv/bin/python benchmarks/jobs_ceiling.py                              # every op, 25,728 cases (~12 min)
    .venv/bin/python benchmarks/jobs_ceiling.py --ops batch_norm --cases 12800

For each op, on the throughput benchmark's small-case campaign (`benchmarks/throughput.py`: float32,
the three framework runners, every regime but "long", `--no-minimize`, seed `--seed`), with the same
`--cases N` each time, so that every campaign runs the same cases:

    alone      one `--jobs 1` campaign pinned to core 0 (its fuzzing seconds, start-up excluded);
    pair       two independent `--jobs 1` campaigns at once, pinned to cores 0 and 1, each with its
               own database: two cores' ceiling for this workload, ceiling = alone / mean(pair) x 2
               (2.0: the second core costs the first nothing; less: they share something, such as
               memory bandwidth, caches, or a host that runs both virtual cores on one physical one);
    jobs 2     one `--jobs 2` campaign pinned to cores 0 and 1: jobs2/jobs1 over the rounds it and
               the alone campaign ran to their end with the same cases (`throughput.round_scaling`,
               as the throughput benchmark measures it), and its share of the ceiling.

What `--jobs 2` loses against the ceiling is its own: the shared database (one writer at a time,
each commit invalidating the other job's page cache), the parent's progress polling, jobs that
finish their share of N at different times (the tail: `--cases N` gives each job N / 2 cases, and
equal rounds exclude it). Findings are printed for each campaign: the same cases give the same
findings, a check that the work was equal.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import MODES, campaign_throughput, ops_argument, round_scaling, two_cpus  # noqa: E402

# Two rounds at the default family size (200 examples x 64 cases) and two families more: a round that
# ends at the case limit counts as cut (`Campaign._timed_round`), so each job of `--jobs 2` (N / 2
# cases) needs a family beyond its round for that round to count as run to its end.
DEFAULT_CASES = 2 * 200 * 64 + 2 * 64


def measure(op: str, cases: int, *, seed: int = 0, cpus: Sequence[int] = (0, 1),
            runner_ids: Sequence[str] | None = None, workdir: str | None = None) -> dict[str, Any]:
    """The alone, pair and --jobs 2 campaigns of `op` on the same `cases` cases (see the module
    docstring); returns their figures and the ratios."""
    common = dict(budget=60.0, seed=seed, cases=cases, runner_ids=runner_ids, workdir=workdir)
    alone = campaign_throughput(op, "small", jobs=1, cpus=[cpus[0]], **common)
    with ThreadPoolExecutor(2) as ex:  # (each waits on its own subprocess)
        pair = list(ex.map(lambda c: campaign_throughput(op, "small", jobs=1, cpus=[c], **common), cpus[:2]))
    jobs2 = campaign_throughput(op, "small", jobs=2, cpus=list(cpus[:2]), **common)
    pair_s = [p["fuzzing_seconds"] for p in pair]
    ceiling = 2 * alone["fuzzing_seconds"] / (sum(pair_s) / 2)
    rs = round_scaling(alone.get("rounds"), jobs2.get("rounds"))
    return {"op": op, "cases": cases, "alone_s": alone["fuzzing_seconds"], "pair_s": pair_s,
            "findings": {"alone": alone["findings"], "pair": [p["findings"] for p in pair],
                         "jobs2": jobs2["findings"]},
            "ceiling": ceiling, "jobs_scaling": rs["scaling"], "jobs_rounds": rs,
            "share_of_ceiling": rs["scaling"] / ceiling if rs["scaling"] is not None else None}


def format_row(r: dict[str, Any]) -> str:
    js = "n/a (no equal round)" if r["jobs_scaling"] is None else \
        f"{r['jobs_scaling']:.2f} over {r['jobs_rounds']['rounds']} equal rounds ({r['share_of_ceiling']:.0%} of the ceiling)"
    return (f"{r['op']}: {r['cases']} cases; alone {r['alone_s']:.1f} s; pair {r['pair_s'][0]:.1f} s and "
            f"{r['pair_s'][1]:.1f} s -> ceiling {r['ceiling']:.2f}; --jobs 2 {js}; findings alone "
            f"{r['findings']['alone']}, pair {r['findings']['pair'][0]} and {r['findings']['pair'][1]}, "
            f"--jobs 2 {r['findings']['jobs2']}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default=",".join(MODES), help="comma list (default: every op of the throughput benchmark)")
    p.add_argument("--cases", type=int, default=DEFAULT_CASES, help="cases of each campaign (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    a = p.parse_args(argv)
    ops = ops_argument(p, a.ops)
    cpus = two_cpus("jobs_ceiling")
    if cpus is None:
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="normfuzz-ceiling-") as work:
        for op in ops:
            rows.append(measure(op, a.cases, seed=a.seed, cpus=cpus, workdir=work))
            print(format_row(rows[-1]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
