"""Tests for fuzz.case: the Case record, its id, its JSON and file forms, and what loading refuses."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pathlib
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz.case import Case, CaseFormatError

# Bit patterns worth having in every generated array, per carrier width.
_SPECIAL_BITS = {
    "float16": [0x8000, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x7E01, 0xFD55, 0x7BFF],
    "bfloat16": [0x80000000, 0x00010000, 0x007F0000, 0x7F800000, 0xFF800000, 0x7FC00001, 0xFF81ABCD, 0x7F7F0000],
    "float32": [0x80000000, 0x00000001, 0x007FFFFF, 0x7F800000, 0xFF800000, 0x7FC00001, 0xFF81ABCD, 0x7F7FFFFF],
    "float64": [
        0x8000000000000000, 0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x7FF0000000000000,
        0xFFF0000000000000, 0x7FF8000000000001, 0xFFF4000000ABCDEF, 0x7FEFFFFFFFFFFFFF,
    ],
}
_UINT = {"float16": np.uint16, "bfloat16": np.uint32, "float32": np.uint32, "float64": np.uint64}
_CARRIER = {"float16": np.float16, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}


def random_array(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Uniformly random bit patterns (NaN payloads, subnormals, infinities all appear) in `dtype`'s
    carrier, with some elements overwritten by special values; bfloat16 keeps its low 16 bits zero."""
    uint = _UINT[dtype]
    bits = rng.integers(0, np.iinfo(uint).max, size=shape, dtype=uint, endpoint=True)
    if dtype == "bfloat16":
        bits &= np.uint32(0xFFFF0000)
    flat = bits.reshape(-1)
    if flat.size:
        where = rng.integers(0, flat.size, size=max(1, flat.size // 3))
        flat[where] = np.array(_SPECIAL_BITS[dtype], dtype=uint)[rng.integers(0, 8, size=where.size)]
    return bits.view(_CARRIER[dtype])


def layer_norm_case(**changes) -> Case:
    fields = dict(
        op="layer_norm",
        mode="forward",
        dtype="float16",
        inputs={
            "x": np.arange(36, dtype=np.float16).reshape(2, 6, 3) / np.float16(8),  # exact values
            "weight": np.ones(3, np.float16),
        },
        attrs={"eps": 1e-5, "normalized_ndim": 1},
    )
    fields.update(changes)
    return Case(**fields)


def assert_same_content(a: Case, b: Case) -> None:
    """Same op/mode/dtype, same inputs in the same order with identical bytes, same attrs, same id."""
    assert (a.op, a.mode, a.dtype) == (b.op, b.mode, b.dtype)
    assert list(a.inputs) == list(b.inputs)
    for name in a.inputs:
        x, y = a.inputs[name], b.inputs[name]
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        assert x.tobytes() == y.tobytes(), name
    assert json.dumps(a._metadata()["attrs"]) == json.dumps(b._metadata()["attrs"])
    assert a.id == b.id and a == b


# --------------------------------------------------------------------------------------------------
# Round trips


input_names = st.text("abxy_019", max_size=6).map(lambda s: "n" + s)  # identifiers
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
attr_names = st.sampled_from(["eps", "momentum", "axes", "layout", "affine", "_x1"])
attr_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner), max_leaves=6)


@given(
    seed=st.integers(0, 2**64 - 1),
    dtype=st.sampled_from(["float16", "bfloat16", "float32", "float64"]),
    shapes=st.dictionaries(input_names, st.lists(st.integers(0, 5), max_size=3).map(tuple), min_size=1, max_size=3),
    step=st.none() | st.integers(-(2**63), 2**63 - 1),
    attrs=st.dictionaries(attr_names, attr_values, max_size=4),
)
def test_round_trips_preserve_every_byte(tmp_path_factory, seed, dtype, shapes, step, attrs):
    rng = np.random.default_rng(seed)
    inputs = {name: random_array(rng, dtype, shape) for name, shape in shapes.items()}
    if step is not None:
        inputs["step_counter"] = np.array(step, dtype=np.int64)
    case = Case("some_norm", "forward", dtype, inputs, attrs)

    via_json = Case.from_json(case.to_json())
    assert_same_content(case, via_json)

    directory = tmp_path_factory.mktemp("cases")
    json_path = case.save(directory)
    assert json_path == directory / f"{case.id}.json"
    assert_same_content(case, Case.load(json_path))
    assert_same_content(case, Case.load(json_path.with_suffix(".npz")))
    assert_same_content(case, pickle.loads(pickle.dumps(case)))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_special_values_survive_both_forms(tmp_path, dtype):
    bits = np.array(_SPECIAL_BITS[dtype], dtype=_UINT[dtype])
    case = Case("layer_norm", "forward", dtype, {"x": bits.view(_CARRIER[dtype])}, {"eps": -0.0, "m": float("inf")})
    for back in (Case.from_json(case.to_json()), Case.load(case.save(tmp_path))):
        assert back.inputs["x"].view(_UINT[dtype]).tolist() == bits.tolist()
        assert str(back.attrs["eps"]) == "-0.0" and back.attrs["m"] == float("inf")


def test_nan_attr_round_trips_and_hashes_stably():
    case = layer_norm_case(attrs={"eps": float("nan")})
    back = Case.from_json(case.to_json())
    assert np.isnan(back.attrs["eps"]) and back.id == case.id


def test_saving_twice_writes_identical_bytes(tmp_path):
    case = layer_norm_case()
    first = case.save(tmp_path / "a")
    second = case.save(tmp_path / "b")
    for suffix in (".json", ".npz"):
        assert first.with_suffix(suffix).read_bytes() == second.with_suffix(suffix).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"{case.id}.json", f"{case.id}.npz"]


def test_saved_npz_is_what_np_load_reads(tmp_path):
    case = layer_norm_case()
    with np.load(case.save(tmp_path).with_suffix(".npz"), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["weight", "x"]
        assert npz["x"].tobytes() == case.inputs["x"].tobytes()


def test_input_named_like_savez_keywords_round_trips(tmp_path):
    case = Case("op", "forward", "float32", {"file": np.zeros(2, np.float32), "allow_pickle": np.ones(1, np.float32)})
    assert_same_content(case, Case.load(case.save(tmp_path)))


# --------------------------------------------------------------------------------------------------
# Identity


def test_id_is_golden_and_follows_the_documented_encoding():
    # Guards the canonical encoding: if this changes, every stored case gets a new id.
    case = layer_norm_case()
    assert case.id == "cd8818bab3d54f80"
    header = {
        "op": "layer_norm",
        "mode": "forward",
        "dtype": "float16",
        "attrs": {"eps": {"float": (1e-5).hex()}, "normalized_ndim": 1},
        "inputs": [["weight", "<f2", [3]], ["x", "<f2", [2, 6, 3]]],
    }
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h = hashlib.sha256(b"normfuzz.case/1\n" + len(blob).to_bytes(8, "little") + blob)
    for name in ("weight", "x"):
        data = case.inputs[name].tobytes()
        h.update(len(data).to_bytes(8, "little") + data)
    assert h.hexdigest()[:16] == case.id


def test_id_ignores_input_order_and_input_memory_layout():
    case = layer_norm_case()
    x = case.inputs["x"]
    reordered = layer_norm_case(inputs={"weight": np.ones(3, np.float16), "x": np.asfortranarray(x).astype(">f2")})
    assert reordered.id == case.id and reordered == case and hash(reordered) == hash(case)
    assert reordered.inputs["x"].dtype.str == "<f2"


@pytest.mark.parametrize(
    "change",
    [
        {"op": "rms_norm"},
        {"mode": "backward"},
        {"attrs": {"eps": 1e-5, "normalized_ndim": 2}},
        {"attrs": {"eps": np.nextafter(1e-5, 1.0), "normalized_ndim": 1}},
        {"attrs": {"eps": 1e-5, "normalized_ndim": 1.0}},
        {"attrs": {"eps": 1e-5, "normalized_ndim": True}},
        {"attrs": {"eps": 1e-5, "normalized_ndim": 1, "extra": None}},
        {"attrs": {"eps": 1e-5}},
    ],
    ids=repr,
)
def test_id_changes_with_any_field(change):
    assert layer_norm_case(**change).id != layer_norm_case().id


def test_id_changes_with_one_bit_of_any_array_element():
    case = layer_norm_case()
    rng = np.random.default_rng(0)
    for name, arr in case.inputs.items():
        for _ in range(10):
            bits = arr.view(np.uint16).copy().reshape(-1)
            bits[rng.integers(bits.size)] ^= np.uint16(1 << int(rng.integers(16)))
            inputs = dict(case.inputs, **{name: bits.view(np.float16).reshape(arr.shape)})
            assert layer_norm_case(inputs=inputs).id != case.id


def test_id_changes_with_shape_name_dtype_of_same_bytes():
    base = Case("op", "forward", "float32", {"x": np.zeros((2, 3), np.float32), "n": np.array(1, np.int64)})
    variants = [
        {"x": np.zeros((3, 2), np.float32), "n": np.array(1, np.int64)},
        {"y": np.zeros((2, 3), np.float32), "n": np.array(1, np.int64)},
        {"x": np.zeros((2, 3), np.float32), "n": np.array([1, 0], np.int32)},
        {"x": np.zeros((2, 3), np.float32), "n": np.array(1, np.uint64)},
    ]
    ids = {base.id} | {Case("op", "forward", "float32", v).id for v in variants}
    assert len(ids) == 1 + len(variants)
    plus, minus = (Case("op", "forward", "float32", {}, {"eps": zero}) for zero in (0.0, -0.0))
    assert plus.id != minus.id


def test_equal_cases_built_from_equal_parts():
    assert layer_norm_case() == layer_norm_case()
    assert layer_norm_case() != layer_norm_case(op="rms_norm")
    assert layer_norm_case() != "not a case"


# --------------------------------------------------------------------------------------------------
# Human form


def test_summary_format():
    assert layer_norm_case().summary() == "layer_norm/forward x[2,6,3] weight[3] f16 eps=1e-05 normalized_ndim=1"
    case = Case(
        "batch_norm",
        "train",
        "bfloat16",
        {"x": np.zeros((4, 3), np.float32), "step": np.array(7, np.int64), "mask": np.ones(4, bool)},
        {"momentum": 0.1, "axes": (0,), "layout": "NCHW", "note": "two words", "affine": False, "z": None},
    )
    assert case.summary() == (
        "batch_norm/train x[4,3] step[]:i64 mask[4]:bool bf16 affine=False axes=[0] layout=NCHW "
        "momentum=0.1 note='two words' z=None"
    )
    assert repr(case) == f"<Case {case.id} {case.summary()}>"


# --------------------------------------------------------------------------------------------------
# Validation and immutability


def test_attrs_are_canonical():
    case = layer_norm_case(attrs={"b": [1, (2.0, np.float32(0.5))], "a": np.int64(3), "c": np.bool_(True)})
    assert list(case.attrs) == ["a", "b", "c"]
    assert case.attrs["b"] == (1, (2.0, 0.5))
    assert [type(v) for v in case.attrs.values()] == [int, tuple, bool]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dtype": "float8"}, "dtype='float8' is not supported"),
        ({"op": "layer norm"}, "op='layer norm' is not a valid name"),
        ({"mode": ""}, "mode='' is not a valid name"),
        (
            {"inputs": {"x": np.zeros(2, np.float32)}},
            "input 'x' has dtype float32 but a float16 case stores float inputs as float16",
        ),
        ({"inputs": {"x": np.zeros(2, object)}}, "input 'x' has dtype object"),
        ({"inputs": {"x": np.array(["a"])}}, "input 'x' has dtype <U1"),
        ({"inputs": {"x": np.zeros(2, np.complex64)}}, "input 'x' has dtype complex64"),
        ({"inputs": {"x": np.zeros(2, np.longdouble)}}, "input 'x' has dtype float128"),
        ({"inputs": {"bad name": np.zeros(2, np.float16)}}, "input name 'bad name' is not valid"),
        ({"inputs": [np.zeros(2, np.float16)]}, "inputs is a list; expected a mapping"),
        ({"attrs": {"eps": {"a": 1}}}, "attr 'eps' has type dict"),
        ({"attrs": {"eps": np.zeros(2)}}, "attr 'eps' has type ndarray"),
        ({"attrs": {"eps": np.longdouble(1)}}, "attr 'eps' is a float128"),
        ({"attrs": {3: 1}}, "attr name 3 is not valid"),
    ],
)
def test_invalid_cases_are_refused(change, message):
    with pytest.raises(CaseFormatError) as info:
        layer_norm_case(**change)
    assert message in str(info.value)


def test_bfloat16_carrier_must_hold_bfloat16_values():
    ok = np.array([1.0, -0.0, np.inf], np.float32)
    nan_with_low_bits = np.array([0x7FC0ABCD], np.uint32).view(np.float32)
    Case("rms_norm", "forward", "bfloat16", {"x": ok, "y": nan_with_low_bits})
    with pytest.raises(CaseFormatError, match=r"input 'x' is not bfloat16-representable at index \(1,\): 1\.1"):
        Case("rms_norm", "forward", "bfloat16", {"x": np.array([1.0, 1.1], np.float32)})
    with pytest.raises(CaseFormatError, match="bfloat16 case stores float inputs as float32"):
        Case("rms_norm", "forward", "bfloat16", {"x": np.zeros(2, np.float16)})


def test_case_is_immutable():
    source = np.zeros((2, 3), np.float16)
    case = layer_norm_case(inputs={"x": source})
    source[0, 0] = 1  # the case holds a copy
    x = case.inputs["x"]
    assert x[0, 0] == 0
    with pytest.raises(ValueError):
        x[0, 0] = 1
    with pytest.raises(ValueError):
        x.setflags(write=True)
    with pytest.raises(TypeError):
        case.inputs["x"] = source
    with pytest.raises(TypeError):
        case.attrs["eps"] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        case.op = "rms_norm"
    assert dataclasses.replace(case, op="rms_norm").op == "rms_norm"
    assert copy.deepcopy(case) == case


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_a_family_is_the_cases_built_one_by_one(dtype):
    rng = np.random.default_rng(7)
    x = random_array(rng, dtype, (5, 2, 3))
    gamma = random_array(rng, dtype, (3,))
    attrs = {"eps": 1e-5, "normalized_ndim": 1}
    fam = Case.family("layer_norm", "forward", dtype, {"x": x, "gamma": gamma}, 5, attrs, shared=("gamma",))
    alone = [Case("layer_norm", "forward", dtype, {"x": x[i], "gamma": gamma}, attrs) for i in range(5)]
    assert fam == alone and [c.id for c in fam] == [c.id for c in alone]
    assert [c.summary() for c in fam] == [c.summary() for c in alone]
    assert all(c.inputs["gamma"] is fam[0].inputs["gamma"] for c in fam)  # shared: one array
    x[:] = 0  # the family holds a copy
    assert fam == alone
    for c in fam:
        with pytest.raises(ValueError):
            c.inputs["x"].setflags(write=True)
        with pytest.raises(TypeError):
            c.inputs["x"] = x
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.op = "rms_norm"
        assert copy.deepcopy(c) == c and pickle.loads(pickle.dumps(c)) == c


def test_a_family_refuses_what_one_of_its_cases_would():
    good = np.zeros((3, 4), np.float32)
    bad = good.copy()
    bad[2, 1] = 1.1  # member 2 only: not bfloat16-representable
    with pytest.raises(CaseFormatError, match=r"not bfloat16-representable at index \(2, 1\)"):
        Case.family("rms_norm", "forward", "bfloat16", {"x": bad}, 3)
    with pytest.raises(CaseFormatError, match="stores float inputs as float32"):
        Case.family("rms_norm", "forward", "float32", {"x": good.astype(np.float16)}, 3)
    with pytest.raises(CaseFormatError, match="dtype='float8'"):
        Case.family("rms_norm", "forward", "float8", {"x": good}, 3)
    with pytest.raises(CaseFormatError, match="input name 'bad name' is not valid"):
        Case.family("rms_norm", "forward", "float32", {"bad name": good}, 3)
    with pytest.raises(CaseFormatError, match="not a valid name"):
        Case.family("rms norm", "forward", "float32", {"x": good}, 3)
    with pytest.raises(ValueError, match="leading axis of 4 members"):
        Case.family("rms_norm", "forward", "float32", {"x": good}, 4)


# --------------------------------------------------------------------------------------------------
# What loading refuses


@pytest.fixture
def saved(tmp_path) -> pathlib.Path:
    return layer_norm_case().save(tmp_path)


def edit_json(path: pathlib.Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def refusal(path) -> str:
    with pytest.raises(CaseFormatError) as info:
        Case.load(path)
    return str(info.value)


def test_refuses_truncated_npz(saved):
    npz = saved.with_suffix(".npz")
    data = npz.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 1):
        npz.write_bytes(data[:size])
        assert refusal(saved).startswith(f"{npz}: not a readable case .npz")


def test_refuses_corrupted_array_bytes(saved):
    npz = saved.with_suffix(".npz")
    data = bytearray(npz.read_bytes())
    offset = data.index(b"\n", data.index(b"x.npy")) + 5  # inside x's data, after its .npy header
    data[offset] ^= 0x40
    npz.write_bytes(bytes(data))
    assert "CRC" in refusal(saved)


def test_refuses_corrupt_json(saved):
    saved.write_text('{"schema": "normfuzz.case", "version": 1,')
    assert refusal(saved).startswith(f"{saved}: not valid JSON")
    saved.write_bytes(b"\xff\xfe\x00garbage")
    assert "not valid JSON" in refusal(saved)
    saved.write_text("[1, 2]")
    assert "expected a JSON object, got list" in refusal(saved)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(version=2), "case format version 2 is not supported; this normfuzz reads 1"),
        (lambda d: d.update(version="1"), "case format version '1' is not supported"),
        (lambda d: d.update(version=True), "case format version True is not supported"),
        (lambda d: d.update(schema="other.thing"), "schema is 'other.thing'; expected 'normfuzz.case'"),
        (lambda d: d.pop("attrs"), "fields missing ['attrs'], unexpected []"),
        (lambda d: d.update(note="hi"), "fields missing [], unexpected ['note']"),
        (lambda d: d["inputs"][0].update(dtype="|O"), "input 'x' dtype '|O' is not allowed"),
        (lambda d: d["inputs"][0].update(dtype="<f4"), "x.npy is <f2 [2, 6, 3]; the metadata declares <f4 [2, 6, 3]"),
        (lambda d: d["inputs"][0].update(shape=[6, 6]), "x.npy is <f2 [2, 6, 3]; the metadata declares <f2 [6, 6]"),
        (lambda d: d["inputs"][0].update(shape=[2, -1]), "shape [2, -1] is not a list of non-negative ints"),
        (lambda d: d["inputs"].pop(), "arrays missing [], unexpected ['weight.npy']"),
        (lambda d: d["inputs"].append(dict(d["inputs"][0])), "name 'x' is not a string or is repeated"),
        (lambda d: d["attrs"].update(eps={"float": "1e-5x"}), "'1e-5x' is not a float in float.hex() form"),
        (lambda d: d["attrs"].update(eps={"value": 1}), 'attr \'eps\': {"value": 1} is not an attr value'),
        (lambda d: d.update(dtype="float32"), "input 'x' has dtype float16 but a float32 case"),
    ],
)
def test_refuses_malformed_metadata(saved, edit, message):
    edit_json(saved, edit)
    text = refusal(saved)
    assert text.startswith(str(saved.parent)) and message in text


def test_refuses_absurd_shape_before_reading_arrays(saved, monkeypatch):
    edit_json(saved, lambda d: d["inputs"][0].update(shape=[2**20, 2**20, 2**10]))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load called"))
    text = refusal(saved)
    assert "input 'x' declares shape [1048576, 1048576, 1024] of <f2 (2.1e+06 GiB" in text
    assert "a case holds at most 2 GiB" in text


def test_refuses_inputs_that_are_absurd_only_together(saved):
    edit_json(saved, lambda d: [e.update(dtype="<f2", shape=[600, 1024, 1024]) for e in d["inputs"]])
    assert "input 'weight' declares shape [600, 1024, 1024]" in refusal(saved)


class _Unpickled:
    """Touches `marker` if it is ever unpickled."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_refuses_object_arrays_without_unpickling(saved, tmp_path):
    marker = tmp_path / "unpickled"
    evil = np.empty(2, dtype=object)
    evil[:] = [_Unpickled(marker), _Unpickled(marker)]
    npz = saved.with_suffix(".npz")
    with np.load(npz) as good:
        weight = good["weight"]
    np.savez(npz, x=evil, weight=weight)  # savez pickles object arrays
    with pytest.raises(ValueError):  # sanity: the file really holds a pickle
        np.load(npz, allow_pickle=False)["x"]

    assert "x.npy holds an object array (dtype object)" in refusal(saved)
    edit_json(saved, lambda d: d["inputs"][0].update(dtype="|O", shape=[2]))
    assert "dtype '|O' is not allowed" in refusal(saved)
    assert not marker.exists()


def test_refuses_id_mismatch(saved):
    edit_json(saved, lambda d: d["attrs"].update(normalized_ndim=2))
    assert "does not match the content's id" in refusal(saved)
    edited = Case.load(saved, check_id=False)
    assert edited.attrs["normalized_ndim"] == 2 and edited.id != saved.stem


def test_refuses_arrays_from_another_case(saved, tmp_path):
    other = layer_norm_case(inputs={"x": np.zeros((2, 6, 3), np.float16), "weight": np.ones(3, np.float16)})
    saved.with_suffix(".npz").write_bytes(other.save(tmp_path / "other").with_suffix(".npz").read_bytes())
    assert "does not match the content's id" in refusal(saved)


def test_refuses_missing_files_and_other_suffixes(saved):
    assert "expected the .json or .npz file" in refusal(saved.with_suffix(".txt"))
    saved.with_suffix(".npz").unlink()
    assert refusal(saved) == f"{saved.with_suffix('.npz')}: missing; a saved case needs its .json and its .npz"
    assert "cannot read case metadata" in refusal(saved.parent / "nothing.json")


def test_refuses_extra_npz_members(saved):
    with zipfile.ZipFile(saved.with_suffix(".npz"), "a") as zf:
        zf.writestr("extra.npy", b"")
    assert "unexpected ['extra.npy']" in refusal(saved)


def test_from_json_refusals():
    doc = json.loads(layer_norm_case().to_json())
    doc["inputs"][1]["data"] = "***"
    with pytest.raises(CaseFormatError, match="input 'weight' data is not valid base64"):
        Case.from_json(json.dumps(doc))
    doc["inputs"][1]["data"] = "AAAA"
    with pytest.raises(CaseFormatError, match=r"input 'weight' data has 3 bytes; shape \[3\] of <f2 needs 6"):
        Case.from_json(json.dumps(doc))
    doc["inputs"][1].pop("data")
    with pytest.raises(CaseFormatError, match=r"inputs\[1\] has \['dtype', 'name', 'shape'\]"):
        Case.from_json(json.dumps(doc))
    with pytest.raises(CaseFormatError, match="case JSON: not valid JSON"):
        Case.from_json("[" * 100_000)
