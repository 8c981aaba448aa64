"""Headless Chromium for the report tests: render a page from disk, read back its DOM, screenshot it.

Chromium is Debian's `chromium` package (`make test` installs it when missing, see the Makefile).
Flags: headless, no sandbox (tests run as root in CI containers), no GPU, and no background traffic
of any kind (no QUIC, sync, component updates, first-run tasks), a throw-away profile folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio")
TIMEOUT = 120


def find_chromium() -> str | None:
    """The chromium executable, or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str]) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (make test installs it: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="nf-chromium-") as profile:
        env = {**os.environ, "HOME": profile}  # keep Chromium's caches out of the real home
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=TIMEOUT, env=env)


def dump_dom(page: Path, fragment: str = "") -> tuple[str, list[str]]:
    """The DOM of `page` after its scripts ran (`--dump-dom`), serialized as HTML, and every
    message the page wrote to the console (Chromium logs them to stderr as `...:CONSOLE...` lines:
    uncaught exceptions, console calls, refused requests)."""
    proc = _run(["--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri() + fragment])
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium --dump-dom failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def screenshot(page: Path, png: Path, *, width: int = 1400, height: int = 3000) -> Path:
    """A PNG of the top `width` x `height` pixels of `page`."""
    proc = _run([f"--screenshot={png}", f"--window-size={width},{height}", "--hide-scrollbars",
                 page.resolve().as_uri()])
    if not png.exists():
        raise RuntimeError(f"chromium --screenshot wrote nothing (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return png


class Dom(HTMLParser):
    """A flat view of a serialized DOM: every element (tag, attrs, text inside it), in document order."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self._open: list[dict] = []
        self.root_attrs: dict[str, str] = {}
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        e = {"tag": tag, "attrs": {k: (v or "") for k, v in attrs}, "text": [], "parents": [p["tag"] for p in self._open]}
        if tag == "html":
            self.root_attrs = e["attrs"]
        self.elements.append(e)
        if tag not in self.VOID:
            self._open.append(e)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID and self._open and self._open[-1]["tag"] == tag:
            self._open.pop()

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i]["tag"] == tag:
                del self._open[i:]
                break

    def handle_data(self, data):
        for e in self._open:
            e["text"].append(data)

    def find(self, tag: str | None = None, **attrs) -> list[dict]:
        """Elements with this tag (any when None) whose attributes contain the given values (for
        `class_`, one of the space-separated classes)."""
        out = []
        for e in self.elements:
            if tag is not None and e["tag"] != tag:
                continue
            ok = True
            for k, v in attrs.items():
                name = k.rstrip("_").replace("_", "-")
                have = e["attrs"].get(name)
                if name == "class":
                    ok = have is not None and v in have.split()
                else:
                    ok = have == v
                if not ok:
                    break
            if ok:
                out.append(e)
        return out

    @staticmethod
    def text(e: dict) -> str:
        return "".join(e["text"])
