"""The report of a real small campaign, rendered in headless Chromium.

One campaign (module fixture) runs the faulty plug-in runners (one raises "faulty kernel:
<script>alert(1)</script> & friends" on a third of the cases, one returns a wrongly shaped output)
next to torch.functional on layer_norm in float16 and float32 (torch finds real float16 findings
within a few dozen cases). The campaign writes report.html itself; `normfuzz report` writes it again.
Chromium opens the file from disk: the matrix, bucket sections and SVG figures must be in the
rendered DOM, no script error, blocked request or alert may be logged (the page records them in
#nf-errors), the exception message must be inert text, and the page's own self-test of sorting and
filtering (URL fragment #nf-selftest) must pass. A screenshot is saved for people to look at:
`<pytest tmp>/report.png`, copied to `runs/report-screenshot.png`.

Chromium comes from Debian's `chromium` package; `make test` installs it when missing and sets
NORMFUZZ_REQUIRE_BROWSER=1, which turns a missing browser into a failure instead of a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fuzz.campaign import Campaign, CampaignConfig
from fuzz.cli import main
from fuzz.store import Store, bucket_id

from reports.assets import APP, ERROR_CAPTURE

from .browser import Dom, dump_dom, find_chromium, screenshot

FAULTY = "tests.fuzz.faulty_runners:runners"
MESSAGE = "faulty kernel: <script>alert(1)</script> & friends"
REPO = Path(__file__).resolve().parents[2]

if find_chromium() is None:
    if os.environ.get("NORMFUZZ_REQUIRE_BROWSER") == "1":
        raise RuntimeError("chromium is required (NORMFUZZ_REQUIRE_BROWSER=1) but not installed: "
                           "apt-get install -y chromium")
    pytest.skip("chromium is not installed (make test installs it)", allow_module_level=True)


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    runners = ["faulty.none", "faulty.raise.often", "faulty.wrong_shape.often"]
    if _torch_available():
        runners.append("torch.functional")
    cfg = CampaignConfig(out=str(out), plugins=[FAULTY], runners=runners, ops=["layer_norm"], modes=["forward", "vjp"],
                         dtypes=["float16", "float32"], max_cases=150, timeout=30.0, seed=1,
                         pack=1)  # `.often` fires by the content hash of the case a worker gets: unpacked
    summary = Campaign(cfg).run()  # writes out/report.html itself
    return out, summary


@pytest.fixture(scope="module")
def rendered(campaign, tmp_path_factory):
    out, _ = campaign
    page = tmp_path_factory.mktemp("page") / "report.html"
    assert main(["report", str(out), "--out", str(page)]) == 0
    html, console = dump_dom(page, "#nf-selftest")
    return page, Dom(html), console


def test_campaign_writes_its_report(campaign):
    out, summary = campaign
    assert (out / "report.html").is_file()
    assert summary["buckets"] >= 2, summary


def test_page_renders_without_script_errors(rendered):
    _, dom, console = rendered
    assert console == []  # Chromium's own log of the page's console: no error, no refused request
    assert dom.root_attrs.get("data-nf-ready") == "1", "the page's script did not finish"
    (errors,) = dom.find("pre", id="nf-errors")
    assert Dom.text(errors).strip() == "", Dom.text(errors)
    assert dom.root_attrs.get("data-nf-selftest") == "pass", dom.root_attrs.get("data-nf-selftest")


def test_matrix_buckets_and_figures_are_rendered(rendered, campaign):
    _, dom, _ = rendered
    out, _ = campaign
    (matrix,) = dom.find("table", id="matrix")
    chips = [e for e in dom.find("span", class_="chip") if "table" in e["parents"]]
    assert chips, "no matrix cell"
    with Store.open(out, readonly=True) as store:
        buckets = store.buckets()
    sections = dom.find("section", class_="bucket")
    assert {s["attrs"]["id"] for s in sections} == {f"b-{bucket_id(b['key'])}" for b in buckets}
    # every matrix link leads to a bucket section
    links = [a["attrs"]["href"] for a in dom.find("a") if "span" in a["parents"] and a["attrs"].get("href", "").startswith("#b-")]
    assert links and {h[1:] for h in links} <= {s["attrs"]["id"] for s in sections}
    raised = [c for c in chips if "cat-raised" in c["attrs"]["class"].split()]
    assert raised, "the raising runner's cell is not coloured 'raised'"
    svgs = dom.find("svg")
    kinds = {c for s in svgs for c in s["attrs"].get("class", "").split()}
    assert {"fig-hist"} <= kinds, kinds
    if _torch_available():  # torch's float16 findings have outputs: heatmap and scatter
        assert {"fig-heat", "fig-scatter"} <= kinds, kinds
    assert dom.find("table", id="conv-table") and dom.find("table", id="unsupported-table")


def test_framework_messages_are_inert(rendered):
    _, dom, _ = rendered
    scripts = dom.find("script")
    assert len(scripts) == 2, [Dom.text(s)[:80] for s in scripts]  # the page's own two, nothing injected
    assert not any("alert(1)" in Dom.text(s) for s in scripts)
    assert sorted(Dom.text(s).strip() for s in scripts) == sorted([ERROR_CAPTURE.strip(), APP.strip()])
    texts = [Dom.text(e) for e in dom.find("div", class_="explain")]
    assert any(MESSAGE in t for t in texts), "the exception message is not shown as text"


def test_error_capture_and_csp_catch_an_injected_script(rendered, tmp_path):
    """The negative control of the checks above: markup that got in unescaped is refused by the
    page's Content-Security-Policy, and the refusal is logged where the tests look."""
    page, _, _ = rendered
    bad = tmp_path / "injected.html"
    html = page.read_text(encoding="utf-8")
    bad.write_text(html.replace("<main>", f"<main><div>{MESSAGE}</div><img src=x>", 1), encoding="utf-8")
    text, console = dump_dom(bad)
    dom = Dom(text)
    (errors,) = dom.find("pre", id="nf-errors")
    logged = Dom.text(errors)
    assert "blocked by the content security policy: script-src" in logged, logged
    assert "alert called" not in logged  # the injected script never ran
    assert "img-src" in logged  # nor was anything fetched
    assert console, "Chromium logged nothing about the refused script"


def test_screenshot(rendered, tmp_path):
    page, _, _ = rendered
    png = screenshot(page, tmp_path / "report.png", height=4400)  # down to the first bucket's figures
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    keep = REPO / "runs" / "report-screenshot.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copyfile(png, keep)
