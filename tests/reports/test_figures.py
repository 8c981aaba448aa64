"""The SVG figures: well-formed, bars that add up, pooled heatmaps, scatters that keep the worst points."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np

from reports.figures import (HEATMAP_MAX_CELLS, SCATTER_MAX_POINTS, output_scatter, ratio_colour, ratio_heatmap,
                             ratio_histogram)

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    return root


def titles(root) -> list[str]:
    return [t.text or "" for t in root.iter(SVG + "title")]


def test_histogram_counts_every_finding():
    rng = np.random.default_rng(0)
    ratios = list(10 ** rng.uniform(-1, 3, size=37)) + [math.inf] * 4 + [None, math.nan] + [0.0]
    root = parse(ratio_histogram(ratios))
    counted = 0
    for t in titles(root)[1:]:
        counted += int(t.rsplit(": ", 1)[1])
    assert counted == len(ratios)
    assert any(t.startswith("error/bound inf: 4") for t in titles(root))
    assert any(t.startswith("error/bound n/a: 2") for t in titles(root))
    assert "44 findings" in titles(root)[0]


def test_histogram_of_nothing_finite_is_still_valid():
    root = parse(ratio_histogram([math.inf]))
    assert any(t == "error/bound inf: 1" for t in titles(root))


def test_heatmap_one_cell_per_element_with_numbers():
    ratio = np.array([[0.5, 2.0, np.inf]], dtype=np.longdouble)
    actual = np.array([[1.0, 2.0, np.nan]])
    ref = np.array([[1.0, 1.9, 3.0]])
    bound = np.array([[0.1, 0.05, 0.1]])
    root = parse(ratio_heatmap("y", ratio, actual, ref, bound))
    cells = [t for t in titles(root) if t.startswith("y[")]
    assert len(cells) == 3
    assert "got 2, reference 1.9, bound 0.05, error/bound 2" in cells[1]
    fills = [r.get("fill") for r in root.iter(SVG + "rect") if r.find(SVG + "title") is not None
             and r.find(SVG + "title").text.startswith("y[")]
    assert fills == [ratio_colour(0.5), ratio_colour(2.0), ratio_colour(math.inf, nan_pattern=True)]


def test_heatmap_pools_large_outputs_to_the_block_worst():
    shape = (300, 7, 200)
    ratio = np.zeros(shape)
    ratio[123, 4, 150] = 50.0
    root = parse(ratio_heatmap("y", ratio, ratio, ratio, np.ones(shape)))
    cells = [t for t in titles(root) if t.startswith("y[")]
    assert len(cells) <= HEATMAP_MAX_CELLS ** 2
    assert sum("error/bound 50" in t for t in cells) == 1
    assert any(t.startswith("y[123, 4, 150]") for t in cells)


def test_colours_separate_agreement_from_disagreement():
    assert ratio_colour(0.0) == "#ffffff"
    below, above = ratio_colour(0.9), ratio_colour(1.1)
    assert int(below[1:3], 16) < int(below[5:7], 16)  # blue-ish within the bound
    assert int(above[1:3], 16) > int(above[5:7], 16)  # red-ish beyond it
    assert ratio_colour(math.nan) == ratio_colour(math.inf)
    assert ratio_colour(5.0, unconstrained=True) != ratio_colour(5.0)


def test_scatter_subsamples_but_keeps_the_worst_element():
    n = 20_000
    ref = np.linspace(-3, 3, n)
    actual = ref.copy()
    actual[12_345] += 1.0
    bound = np.full(n, 1e-3)
    ratio = np.abs(actual - ref) / bound
    root = parse(output_scatter("y", actual, ref, bound, ratio))
    points = [t for t in titles(root) if t.startswith("y element")]
    assert len(points) <= SCATTER_MAX_POINTS
    assert any(t.startswith("y element 12345 ") for t in points)
    red = [c for c in root.iter(SVG + "circle") if c.get("fill") == "#c62828"]
    assert len(red) == 1


def test_scatter_marks_nonfinite_values():
    root = parse(output_scatter("dx", np.array([np.nan, 1.0]), np.array([0.0, 1.0]), np.array([1e-3, 1e-3]),
                                np.array([np.inf, 0.0])))
    assert len(list(root.iter(SVG + "polygon"))) == 1 and len(list(root.iter(SVG + "circle"))) == 1
