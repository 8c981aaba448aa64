"""normfuzz imports its own packages, not a `fuzz/` or `oracles/` folder of the project it is run
from, in the campaign, its --jobs processes and its workers, while plug-in modules of that folder
still import (`fuzz/importpath.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.importpath import PACKAGE_ROOT, import_path
from tests.fuzz.test_plugin_example import example_source

REPO = Path(__file__).resolve().parents[2]
ROOT = PACKAGE_ROOT


def test_the_package_root_is_the_folder_holding_fuzz():
    assert Path(ROOT) == REPO and (Path(ROOT) / "fuzz" / "importpath.py").is_file()


@pytest.mark.parametrize("path, expected", [
    # an editable install: the packages come from an import hook, the root is on no path entry
    (["/venv/bin", "/py/lib", "/py/site"], [ROOT, "/work/proj", "/venv/bin", "/py/lib", "/py/site"]),
    # the current folder was first (python -c, python -m): it moves behind the root
    (["", "/py/lib", ROOT, "/py/site"], ["/py/lib", ROOT, "/work/proj", "/py/site"]),
    (["/work/proj", ROOT, "/py/lib"], [ROOT, "/work/proj", "/py/lib"]),
    (["/work/proj/", "/work/proj", "/py/lib"], [ROOT, "/work/proj", "/py/lib"]),
    # a regular install: the root (site-packages) keeps its place after the standard library
    (["/venv/bin", "/py/lib", ROOT], ["/venv/bin", "/py/lib", ROOT, "/work/proj"]),
])
def test_the_current_folder_comes_right_after_the_package_root(path, expected):
    assert import_path(path, "/work/proj") == expected


def test_run_from_the_package_root_the_path_keeps_it_once():
    assert import_path(["", "/py/lib"], ROOT) == [ROOT, "/py/lib"]
    assert import_path([ROOT, "/py/lib"], ROOT) == [ROOT, "/py/lib"]


def _project(tmp_path: Path) -> Path:
    """A project folder with packages named like normfuzz's, each failing on import, and the
    README's plug-in runner module."""
    proj = tmp_path / "proj"
    for name in ("fuzz", "oracles", "bugzoo", "reports"):
        (proj / name).mkdir(parents=True)
        (proj / name / "__init__.py").write_text(f"raise ImportError('the project folder\\'s {name} was imported')\n")
    (proj / "my_runner.py").write_text(example_source())
    return proj


def _entry_points(tmp_path: Path) -> list[tuple[str, list[str], dict]]:
    """The ways to start normfuzz: a console script like a regular install's (the root on
    PYTHONPATH), and the virtual environment's own `normfuzz` (an editable install's import hook)
    when there is one."""
    script = tmp_path / "bin" / "normfuzz"
    script.parent.mkdir()
    script.write_text("import sys\nfrom fuzz.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ways = [("script", [sys.executable, str(script)], {**env, "PYTHONPATH": ROOT})]
    installed = Path(sys.executable).parent / "normfuzz"
    if installed.is_file():
        ways.append(("installed", [str(installed)], env))
    return ways


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_campaign_run_from_a_project_with_a_fuzz_package_uses_normfuzz_and_finds_its_plugins(tmp_path, jobs):
    proj = _project(tmp_path)
    ways = _entry_points(tmp_path)
    for name, cmd, env in ways:
        out = f"out-{name}"  # relative: the jobs and workers run in the project folder too
        res = subprocess.run(cmd + ["campaign", "--out", out, "--cases", "40", "--ops", "layer_norm",
                                    "--modes", "forward", "--dtypes", "float32", "--runner", "my_runner:runners",
                                    "--runners", "torch.functional,numpy.layer_norm", "--no-report", "--quiet",
                                    "--jobs", str(jobs)],
                             cwd=proj, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode in (0, 1), (name, res.stderr)
        summary = json.loads((proj / out / "summary.json").read_text())["campaign"]
        assert summary["cases_run"] == 40, name
        assert summary["extra"]["unavailable"] == {}, (name, summary["extra"]["unavailable"])
        assert sorted(summary["extra"]["runners"]) == ["numpy.layer_norm", "torch.functional"], name
