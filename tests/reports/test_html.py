"""The HTML builder escapes everything it is given except its own Markup."""

from __future__ import annotations

import math

from reports.html import Markup, el, esc, fmt_num, fmt_ratio, fmt_seconds, join
from reports.page import _safe_link


def test_children_and_attributes_are_escaped():
    evil = "<script>alert(1)</script> & \"quotes\" 'single'"
    out = el("td", evil, title=evil, data_x=evil)
    assert "<script>" not in out
    assert out == ('<td title="&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot; &#x27;single&#x27;" '
                   'data-x="&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot; &#x27;single&#x27;">'
                   '&lt;script&gt;alert(1)&lt;/script&gt; &amp; "quotes" \'single\'</td>')


def test_markup_passes_and_nesting_stays_escaped():
    inner = el("b", "<i>")
    assert isinstance(inner, Markup)
    assert el("p", inner, " & ", [1, None, ["x<"]]) == "<p><b>&lt;i&gt;</b> &amp; 1x&lt;</p>"
    assert join(["<", el("br")]) == "&lt;<br>"
    assert esc(Markup("<b>")) == "&lt;b&gt;"  # esc always escapes


def test_attribute_names_and_booleans():
    assert el("input", type="search", hidden=True, disabled=False, value=None) == '<input type="search" hidden>'
    assert el("div", class_="a", data_for="t", aria_label="x") == '<div class="a" data-for="t" aria-label="x"></div>'
    assert el("rect", x=1) == '<rect x="1"/>'


def test_links_only_for_http_urls():
    assert _safe_link("https://github.com/pytorch/pytorch/issues/1").startswith('<a href="https://github.com/')
    for bad in ("javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,<script>", "https://x\" onmouseover=\"a"):
        out = _safe_link(bad)
        assert out.startswith("<span>") and "href" not in out, out


def test_number_formats():
    assert fmt_num(None) == "—" and fmt_num(12345) == "12,345" and fmt_num(0.000123456, 3) == "0.000123"
    assert fmt_num(math.nan) == "NaN" and fmt_num(-math.inf) == "-inf"
    assert fmt_ratio(1.23456) == "1.23" and fmt_ratio(math.inf) == "inf" and fmt_ratio(None) == "—"
    assert fmt_seconds(5) == "5.0 s" and fmt_seconds(125) == "2 min 05 s" and fmt_seconds(7380) == "2 h 03 min"
