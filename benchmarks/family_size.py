"""Family size: cases and signatures per second of a campaign, per `--pack` / `--pack-elements`.

    .venv/bin/python benchmarks/family_size.py                       # defaults below (~25 min)
    .venv/bin/python benchmarks/family_size.py --ops layer_norm --seeds 0 --budget 20 \\
        --configs 64:262144,256:32768

One Hypothesis example yields a *family* of cases of one signature (op, mode, dtype, attributes,
shape, parameter kinds), packed into one framework call per runner (`fuzz.packing`). A family has
`min(pack, pack_elements // n)` members for a case of n data elements (`Campaign.family_size`). Its
cost has a fixed part (drawing the example, one call per runner, the oracle's per-call overhead) and a
part per member (elements, and each finding's solo re-run and triage), so larger families raise the
cases per second only while the fixed part dominates, and lower the rate at which the campaign draws
new signatures once it no longer does. This script measures both, for each configuration `K:E`
(`--pack K --pack-elements E`), with the throughput benchmark's campaign (`benchmarks/throughput.py`:
float32, the three framework runners, every regime but "long", cases of at most 4,096 elements,
`--no-minimize`), each run pinned to one core:

    cases/s      cases run per second of fuzzing (startup excluded), as in throughput.py
    families/s   Hypothesis examples evaluated per second (summary.json `totals.families`): the rate
                 of new signatures, which a larger family must not give up for more cases of a few
    elems/case   mean data elements of the cases run (`totals.elements / totals.cases_run`): an element
                 budget gives a small case more members than a larger one, which moves the campaign's
                 case mix toward small cases (cheaper per case), so part of a cases/s gain is that mix

Each (op, configuration) runs once per seed (`--seeds`); the table shows the mean over seeds and
the ratio of each configuration's means to the first configuration's (the default 64:262144 by
default), all measured in this run. A single 30-second run moves by up to 2x with the seed (the
shapes Hypothesis happens to explore), hence several seeds. `--parallel 2` runs two campaigns at a
time, each pinned to its own core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import (DTYPE, MODES, SIZES, _usable_cpus, bench_regimes, bench_runners,  # noqa: E402
                        normfuzz_cmd, run_campaign)

DEFAULT_CONFIGS = ((64, 262144), (64, 16384), (128, 16384), (256, 16384))
DEFAULT_OPS = tuple(MODES)


def parse_configs(text: str) -> list[tuple[int, int]]:
    """'K:E,K:E' -> [(K, E), ...]; ValueError for anything else (K, E >= 1)."""
    out = []
    for part in text.split(","):
        k, sep, e = part.strip().partition(":")
        if not sep or not k.isdigit() or not e.isdigit() or int(k) < 1 or int(e) < 1:
            raise ValueError(f"configuration {part!r} is not PACK:ELEMENTS (two ints >= 1)")
        out.append((int(k), int(e)))
    return out


def run_one(op: str, pack: int, elements: int, seed: int, budget: float, cpu: int | None,
            runners: Sequence[str] | None = None) -> dict[str, Any]:
    """One campaign; {cases, families, fuzz_seconds, cases_per_s, families_per_s, findings}."""
    ids = list(runners) if runners else bench_runners(op, MODES[op])
    out = tempfile.mkdtemp(prefix=f"normfuzz-family-{op}-{pack}-{elements}-")
    cmd = normfuzz_cmd() + ["campaign", "--out", out, "--budget", f"{budget:g}s", "--ops", op,
                            "--modes", MODES[op], "--dtypes", DTYPE, "--runners", ",".join(ids),
                            "--regimes", ",".join(bench_regimes()), "--no-minimize", "--no-report", "--quiet",
                            "--seed", str(seed), "--jobs", "1", "--pack", str(pack), "--pack-elements", str(elements),
                            "--max-elements", str(SIZES["small"]["max_elements"])]
    _, totals = run_campaign(cmd, out, cpus=None if cpu is None else [cpu], timeout=budget + 900)
    fuzz = totals["seconds"] - (totals.get("startup_seconds") or 0.0)
    fam, elems = totals.get("families"), totals.get("elements")
    if fam is None or elems is None:
        raise RuntimeError("summary.json has no totals.families or totals.elements: this normfuzz does not count them")
    return {"op": op, "pack": pack, "pack_elements": elements, "seed": seed, "cases": totals["cases_run"],
            "families": fam, "elements": elems, "fuzz_seconds": fuzz, "findings": totals.get("findings"),
            "elements_per_case": elems / totals["cases_run"] if totals["cases_run"] else None,
            "cases_per_s": totals["cases_run"] / fuzz if fuzz > 0 else None,
            "families_per_s": fam / fuzz if fuzz > 0 else None}


def summarize(rows: Sequence[dict[str, Any]], configs: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """Per (op, configuration): mean cases/s and families/s over seeds, and their ratios to the
    first configuration's means for the same op."""
    table = []
    ops = list(dict.fromkeys(r["op"] for r in rows))
    for op in ops:
        means = {}
        for k, e in configs:
            mine = [r for r in rows if r["op"] == op and (r["pack"], r["pack_elements"]) == (k, e)]
            if mine:
                sizes = [r["elements_per_case"] for r in mine if r.get("elements_per_case") is not None]
                means[(k, e)] = (mean(r["cases_per_s"] for r in mine), mean(r["families_per_s"] for r in mine),
                                 len(mine), mean(sizes) if sizes else None)
        base = means.get(tuple(configs[0]))
        for (k, e), (c, f, n, size) in means.items():
            table.append({"op": op, "pack": k, "pack_elements": e, "runs": n, "cases_per_s": c,
                          "families_per_s": f, "elements_per_case": size,
                          "cases_ratio": c / base[0] if base and base[0] else None,
                          "families_ratio": f / base[1] if base and base[1] else None})
    return table


def format_table(table: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'op':<14} {'pack:elements':>14} {'runs':>4} {'cases/s':>9} {'families/s':>10} "
             f"{'elems/case':>10} {'cases x':>8} {'families x':>10}"]
    for t in table:
        cr = "" if t["cases_ratio"] is None else f"{t['cases_ratio']:.2f}"
        fr = "" if t["families_ratio"] is None else f"{t['families_ratio']:.2f}"
        size = "" if t.get("elements_per_case") is None else f"{t['elements_per_case']:.0f}"
        lines.append(f"{t['op']:<14} {t['pack']:>6}:{t['pack_elements']:<7} {t['runs']:>4} {t['cases_per_s']:>9.0f} "
                     f"{t['families_per_s']:>10.1f} {size:>10} {cr:>8} {fr:>10}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", default=",".join(DEFAULT_OPS), help="comma list (default: the five ops)")
    ap.add_argument("--configs", default=",".join(f"{k}:{e}" for k, e in DEFAULT_CONFIGS),
                    help="PACK:ELEMENTS,... (the first is the baseline of the ratios)")
    ap.add_argument("--seeds", default="0,1", help="campaign seeds, comma list (default 0,1)")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per campaign (default 30)")
    ap.add_argument("--parallel", type=int, default=1, choices=(1, 2),
                    help="campaigns at a time, each pinned to its own core (default 1)")
    ap.add_argument("--runners", default=None, help="runner ids instead of the three framework runners")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the runs and the table as JSON")
    args = ap.parse_args(argv)
    try:
        configs = parse_configs(args.configs)
    except ValueError as exc:
        ap.error(str(exc))
    ops = [o for o in args.ops.split(",") if o]
    unknown = [o for o in ops if o not in MODES]
    if unknown:
        ap.error(f"unknown ops {unknown}; choose from {list(MODES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    runners = args.runners.split(",") if args.runners else None
    cpus = _usable_cpus()
    if len(cpus) < args.parallel:
        ap.error(f"--parallel {args.parallel} needs {args.parallel} usable cores; this process has {len(cpus)}")
    jobs = [(op, k, e, s) for s in seeds for op in ops for k, e in configs]
    print(f"{len(jobs)} campaigns of {args.budget:g} s, {args.parallel} at a time, on cores {cpus[:args.parallel]}",
          flush=True)
    free = list(cpus[:args.parallel])

    def work(job):
        cpu = free.pop()
        try:
            row = run_one(*job[:3], seed=job[3], budget=args.budget, cpu=cpu, runners=runners)
        finally:
            free.append(cpu)
        print(f"  {row['op']:<14} {row['pack']:>4}:{row['pack_elements']:<7} seed {row['seed']}: "
              f"{row['cases_per_s']:.0f} cases/s, {row['families_per_s']:.1f} families/s, "
              f"{row['elements_per_case']:.0f} elements/case, {row['findings']} findings", flush=True)
        return row

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        rows = list(pool.map(work, jobs))
    table = summarize(rows, configs)
    print(format_table(table))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
