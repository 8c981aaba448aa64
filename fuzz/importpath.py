"""Where normfuzz's processes import from: its own packages first, then the user's current folder.

A plug-in runner (`--runner my_runner:runners`) is a module in the folder `normfuzz` is run from, as
with `python -m`, so that folder must be importable in the campaign, in its `--jobs` processes and in
every worker. It must never come *before* normfuzz's own packages (`fuzz`, `oracles`, `bugzoo`,
`reports`): a project that holds a `fuzz/` or `oracles/` folder of its own would otherwise replace
them (an editable install finds them through an import hook that runs after every `sys.path` entry,
so any path entry holding such a folder wins). `PACKAGE_ROOT` is the folder that holds normfuzz's
packages (the repository, or site-packages); `import_path` puts it ahead of the current folder.
"""

from __future__ import annotations

import os

#: The folder holding the `fuzz` package and its siblings.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_path(path: list[str], cwd: str) -> list[str]:
    """`path` (a `sys.path`) with `cwd` importable right after `PACKAGE_ROOT`, and neither ahead of
    it. The entries for the current folder (`""`, `cwd`) are moved there; `PACKAGE_ROOT` stays where
    it is if present (site-packages after the standard library), else it goes first. The other
    entries keep their order."""
    cwd = os.path.abspath(cwd)

    def is_cwd(p: str) -> bool:
        return p in ("", ".") or os.path.abspath(p) == cwd

    out = [p for p in path if p == PACKAGE_ROOT or not is_cwd(p)]
    if PACKAGE_ROOT not in out:
        out.insert(0, PACKAGE_ROOT)
    if cwd != PACKAGE_ROOT:
        out.insert(out.index(PACKAGE_ROOT) + 1, cwd)
    return out
