"""A tiny HTML/SVG builder that escapes by default.

Every page element is made with `el(tag, *children, **attrs)`: a `str` child or attribute value is
escaped (`html.escape(..., quote=True)`), only `Markup` (text this package made itself) passes
through (text nodes escape &, < and >; attribute values also both quotes). Text from a framework (exception messages, versions, details) therefore cannot become
markup unless someone wraps it in `Markup` by hand, which nothing in this package does.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable

__all__ = ["Markup", "el", "esc", "join", "fmt_num", "fmt_ratio", "fmt_seconds"]

#: Elements without content or end tag.
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})
#: SVG elements written self-closed when empty.
SVG_EMPTY = frozenset({"rect", "line", "circle", "path", "polyline", "polygon", "ellipse", "use", "stop"})


class Markup(str):
    """Text that is already HTML (made by this package); `el` inserts it as is."""

    __slots__ = ()


_INVISIBLE = {c: f"\\u{c:04x}" if c > 0xFF else f"\\x{c:02x}"
              for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0),
                        *range(0x202A, 0x202F), *range(0x2066, 0x206A)]}


def _visible(value: Any) -> str:
    """str(value) with control characters and bidi overrides shown as visible escapes (\\x00,
    \\u202e): they are parse errors in HTML or reorder what the reader sees."""
    return str(value).translate(_INVISIBLE)


def esc(value: Any) -> str:
    """`value` as escaped HTML text (quotes included, so it is safe in attributes too)."""
    return html.escape(_visible(value), quote=True)


def _text(value: Any) -> str:
    """`value` escaped for a text node (&, <, >; quotes need no escaping outside attributes)."""
    return html.escape(_visible(value), quote=False)


def _children(items: Iterable[Any], out: list[str]) -> None:
    for c in items:
        if c is None or c is False:
            continue
        if isinstance(c, Markup):
            out.append(c)
        elif isinstance(c, (list, tuple)) or (hasattr(c, "__iter__") and not isinstance(c, (str, bytes, dict))):
            _children(c, out)
        else:
            out.append(_text(c))


def _attr_name(name: str) -> str:
    name = name.rstrip("_")  # class_ -> class, for_ -> for
    return name.replace("_", "-")


def el(tag: str, *children: Any, **attrs: Any) -> Markup:
    """`<tag attrs>children</tag>` with every str child and attribute value escaped.

    Attribute names: a trailing '_' is dropped (`class_`), other '_' become '-' (`data_status`,
    `aria_label`). True writes a boolean attribute, None or False leaves it out. Children may be
    str, numbers, Markup, None (skipped) or (nested) iterables of those.
    """
    parts = [f"<{tag}"]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        n = _attr_name(name)
        parts.append(f" {n}" if value is True else f' {n}="{esc(value)}"')
    parts.append(">")
    if tag in VOID:
        return Markup("".join(parts))
    body: list[str] = []
    _children(children, body)
    if not body and tag in SVG_EMPTY:
        return Markup("".join(parts)[:-1] + "/>")
    return Markup("".join(parts) + "".join(body) + f"</{tag}>")


def join(items: Iterable[Any], sep: str = "") -> Markup:
    """Concatenate children (escaping str items) into one Markup."""
    out: list[str] = []
    _children(items, out)
    return Markup(_text(sep).join(out) if sep else "".join(out))


def fmt_num(x: Any, digits: int = 4) -> str:
    """A number for a table cell: ints as is, floats with `digits` significant digits, nan/inf spelled."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 10_000 else str(x)
    wide = _wide(x, digits)
    if wide is not None:
        return wide
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def _wide(x: Any, digits: int) -> str | None:
    """A finite numpy.longdouble outside float64's range (the oracle's extended precision), in
    scientific notation; None for anything float64 shows faithfully."""
    import numpy as np

    if not isinstance(x, np.floating) or np.finfo(x.dtype).maxexp <= np.finfo(np.float64).maxexp:
        return None
    if not np.isfinite(x) or x == 0:
        return None
    a = abs(x)
    if np.finfo(np.float64).smallest_subnormal <= a <= np.finfo(np.float64).max:
        return None
    return np.format_float_scientific(x, precision=max(digits - 1, 0), unique=False, trim="-")


def fmt_ratio(x: Any) -> str:
    """An error/bound ratio: 3 significant digits, 'inf' for a NaN-pattern difference, '—' when none."""
    if x is None:
        return "—"
    v = float(x)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}"


def fmt_seconds(s: Any) -> str:
    """Seconds as '12.3 s', '4 min 05 s' or '2 h 03 min'."""
    if s is None:
        return "—"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
