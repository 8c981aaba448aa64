"""The store keeps a minimal reproducer's outputs (npz bytes, no pickle) for the report's figures."""

from __future__ import annotations

import io
import sqlite3
import zipfile

import numpy as np
import pytest

import fuzz.store as store_mod
from fuzz.case import Case
from fuzz.outcome import Outcome
from fuzz.store import Store, StoreError


def _bucket(tmp_path):
    s = Store.create(tmp_path / "c", {"config": {}})
    case = Case("layer_norm", "forward", "float32", {"x": np.array([[1.0, 2.0, 4.0]], dtype=np.float32)},
                {"eps": 1e-5})
    out = Outcome("r", case.id, "OK", outputs={"y": np.zeros((1, 3), np.float32)})
    key = s.record_finding(case, out, category="precision", signature="y", max_ratio=2.0).bucket_key
    return s, case, key


def test_outputs_round_trip_bit_for_bit(tmp_path):
    s, case, key = _bucket(tmp_path)
    y = np.array([[-0.0, np.nan, np.inf]], dtype=np.float32)
    y.view(np.uint32)[0, 1] = 0x7FC00123  # a NaN payload survives
    mean = np.array([2.5], dtype=np.float64)
    steps = np.array(3, dtype=np.int64)
    s.set_minimal(key, case, outputs={"y": y, "mean": mean, "steps": steps})
    s.close()
    with Store.open(tmp_path / "c", readonly=True) as r:
        got = r.outputs(case.id, "r")
        assert r.outputs(case.id, "other runner") is None
    assert set(got) == {"y", "mean", "steps"}
    for name, want in (("y", y), ("mean", mean), ("steps", steps)):
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        assert got[name].tobytes() == want.tobytes()


def test_stored_bytes_are_a_plain_npz_without_pickles(tmp_path):
    s, case, key = _bucket(tmp_path)
    s.set_minimal(key, case, outputs={"y": np.ones((1, 3), np.float32)})
    s.close()
    con = sqlite3.connect(tmp_path / "c" / "findings.sqlite")
    (blob,) = con.execute("SELECT npz FROM outputs").fetchone()
    con.close()
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        assert z.namelist() == ["y.npy"]
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        assert np.array_equal(z["y"], np.ones((1, 3), np.float32))


def test_non_numeric_outputs_are_refused_and_nothing_is_written(tmp_path):
    s, case, key = _bucket(tmp_path)
    with pytest.raises(ValueError, match="numeric"):
        s.set_minimal(key, case, outputs={"y": np.array([object()], dtype=object)})
    assert s.bucket(key)["min_case_id"] is None  # the whole set_minimal was refused
    with pytest.raises(ValueError, match="numeric"):
        s.set_minimal(key, case, outputs={"y": np.array(["a"])})
    s.close()


def test_outputs_over_the_limit_are_not_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "MAX_OUTPUT_BYTES", 16)
    s, case, key = _bucket(tmp_path)
    s.set_minimal(key, case, outputs={"y": np.zeros(5, np.float32)})  # 20 bytes > 16
    assert s.bucket(key)["min_case_id"] == case.id
    assert s.outputs(case.id, "r") is None
    s.set_minimal(key, case, outputs={"y": np.zeros(4, np.float32)})  # 16 bytes: kept
    assert s.outputs(case.id, "r")["y"].shape == (4,)
    s.close()


def test_damaged_outputs_raise_store_error(tmp_path):
    s, case, key = _bucket(tmp_path)
    s.set_minimal(key, case, outputs={"y": np.ones(3)})
    s.close()
    con = sqlite3.connect(tmp_path / "c" / "findings.sqlite")
    con.execute("UPDATE outputs SET npz = x'00112233'")
    con.commit()
    con.close()
    with Store.open(tmp_path / "c", readonly=True) as r, pytest.raises(StoreError, match="do not load"):
        r.outputs(case.id, "r")


def test_campaign_stores_the_minimal_cases_outputs(tmp_path):
    from fuzz.campaign import Campaign, CampaignConfig

    cfg = CampaignConfig(out=str(tmp_path / "run"), plugins=["tests.fuzz.faulty_runners:runners"],
                         runners=["faulty.wrong_dtype.often", "faulty.raise.often"], ops=["layer_norm"],
                         modes=["forward"], dtypes=["float32"], max_cases=30, timeout=10.0,
                         pack=1)  # `.often` fires by the content hash of the case a worker gets: unpacked
    Campaign(cfg, write_report=False).run()
    with Store.open(tmp_path / "run", readonly=True) as r:
        buckets = r.buckets()
        assert {b["category"] for b in buckets} == {"raised", "bad_output"}
        for b in buckets:  # neither returned valid outputs: nothing stored, and no error
            assert r.outputs(b["min_case_id"], b["runner"]) is None
