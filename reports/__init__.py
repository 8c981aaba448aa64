"""HTML reports built from the findings store (never from live objects).

`write_report(run_dir, out_file, *, compare=None)` writes one self-contained HTML page for the
campaign in `run_dir` (styles, scripts and SVG figures inline; no network access), comparing its
buckets with the campaign in `compare` when given. `render_report` returns the page as a string.
The CLI front end is `normfuzz report RUN_DIR [--compare PREV] [--out FILE]`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_report", "render_report"]


def render_report(run_dir: str | os.PathLike, *, compare: str | os.PathLike | None = None) -> str:
    """The report page of the campaign in `run_dir` as HTML text (see `write_report`)."""
    from .build import collect
    from .page import render

    return render(collect(run_dir, compare))


def write_report(run_dir: str | os.PathLike, out_file: str | os.PathLike, *,
                 compare: str | os.PathLike | None = None) -> Path:
    """Write the report of the campaign in `run_dir` to `out_file` and return its path.

    `compare`: another campaign's folder; bucket statuses (new, known, recurring, fixed) are then
    computed against its buckets by key. The file is written under a temporary name and renamed,
    so a reader never sees half a page. Raises `fuzz.store.StoreError` when a database cannot be
    read, OSError when the file cannot be written.
    """
    text = render_report(run_dir, compare=compare)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
