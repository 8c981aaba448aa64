"""No false positives: a campaign against the error-model calibration's honest implementations
(tests/oracles/honest.py, as plug-in runners) must report no finding at all.

    .venv/bin/python benchmarks/no_false_positives.py --budget 10m --out runs/honest

Prints the campaign summary; exits 1 if there is any finding.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.campaign import Campaign, CampaignConfig  # noqa: E402
from fuzz.cli import parse_budget  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=parse_budget, default=600.0)
    p.add_argument("--out", default="runs/honest")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    from tests.oracles.honest import HONEST

    cfg = CampaignConfig(out=a.out, plugins=["tests.fuzz.honest_runners:runners"], budget_seconds=a.budget,
                         seed=a.seed, runners=[f"honest.{n}" for n in HONEST])
    s = Campaign(cfg, write_report=False).run()
    print(json.dumps({k: s[k] for k in ("cases_run", "seconds", "cases_per_second", "findings", "buckets")}, indent=2))
    for b in s["bucket_list"]:
        print(b["key"], b["count"], b.get("min_summary"))
    return 1 if s["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
