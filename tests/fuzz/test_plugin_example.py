"""The README's plug-in example runs as written: discovered from a module:factory string, listed by
`normfuzz backends`, run in an isolated worker, and its output agrees with the oracle."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import oracles
from fuzz.case import Case
from fuzz.isolation import Worker

REPO = Path(__file__).resolve().parents[2]


def example_source() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- plugin-example:start -->\s*```python\n(.*?)```\s*<!-- plugin-example:end -->", text, re.S)
    assert m, "README lost its plug-in example block"
    return m.group(1)


def test_readme_plugin_example_runs(tmp_path):
    (tmp_path / "my_runner.py").write_text(example_source())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "fuzz", "backends", "--runner", "my_runner:runners", "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)["runners"]}
    row = rows["numpy.layer_norm"]
    assert row["available"] and row["version"] == np.__version__
    assert row["matrix"]["layer_norm/forward"]["float32"] is None
    assert "float16" in row["matrix"]["layer_norm/forward"]["float16"]

    x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    case = Case(op="layer_norm", mode="forward", dtype="float32", inputs={"x": x},
                attrs={"eps": 1e-5, "normalized_ndim": 1})
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the worker finds the plug-in module from the current folder, like `python -m`
    try:
        with Worker("my_runner:runners", "numpy.layer_norm") as w:
            o = w.run(case)
    finally:
        os.chdir(cwd)
    assert o.status == "OK", o
    ev = oracles.evaluate("layer_norm", "forward", {"x": x}, {"eps": 1e-5, "normalized_ndim": 1}, "float32")
    assert max(float(np.max(r)) for r in ev.ratios(o.outputs, "float32").values()) <= 1
