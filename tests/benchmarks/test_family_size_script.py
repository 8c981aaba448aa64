"""benchmarks/family_size.py: its campaign runs report cases and families, and its table is the
mean over seeds with ratios to the first configuration. No timing assertions."""

from __future__ import annotations

import pytest

from tests.benchmarks._scripts import load

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def fam():
    return load("family_size")


def test_configurations_parse_and_refuse(fam):
    assert fam.parse_configs("64:262144, 256:32768") == [(64, 262144), (256, 32768)]
    for bad in ("64", "64:", "0:100", "a:1", "64:100:3"):
        with pytest.raises(ValueError, match="PACK:ELEMENTS"):
            fam.parse_configs(bad)


def test_the_table_is_the_mean_over_seeds_against_the_first_configuration(fam):
    rows = [{"op": "layer_norm", "pack": 64, "pack_elements": 100, "cases_per_s": c, "families_per_s": f,
             "elements_per_case": n} for c, f, n in ((100.0, 10.0, 8.0), (300.0, 30.0, 4.0))]
    rows += [{"op": "layer_norm", "pack": 8, "pack_elements": 10, "cases_per_s": 400.0, "families_per_s": 5.0,
              "elements_per_case": 2.0}]
    table = fam.summarize(rows, [(64, 100), (8, 10)])
    assert [(t["pack"], t["runs"], t["cases_per_s"], t["families_per_s"], t["elements_per_case"]) for t in table] == \
        [(64, 2, 200.0, 20.0, 6.0), (8, 1, 400.0, 5.0, 2.0)]
    assert [(t["cases_ratio"], t["families_ratio"]) for t in table] == [(1.0, 1.0), (2.0, 0.25)]
    assert "layer_norm" in fam.format_table(table)


@pytest.mark.timeout(300)
def test_a_campaign_run_counts_its_families(fam):
    row = fam.run_one("layer_norm", 4, 64, seed=0, budget=20, cpu=None, runners=["torch.functional"])
    assert row["cases"] > 0 and 0 < row["families"] <= row["cases"] <= 4 * row["families"]
    assert row["cases"] <= row["elements"] and row["elements_per_case"] == row["elements"] / row["cases"]
    assert row["cases_per_s"] > 0 and row["families_per_s"] > 0
