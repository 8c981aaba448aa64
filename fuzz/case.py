"""The `Case` record: one fuzzing input (op, mode, dtype, named arrays, attrs), content-addressed.

A `Case` is immutable and serializable without pickle:

- `Case.to_json()` / `Case.from_json()`: one self-contained JSON document, arrays embedded as base64
  of their raw little-endian bytes (lossless: NaN payloads, -0.0, subnormals survive).
- `Case.save(directory)` / `Case.load(path)`: `<id>.json` (metadata) next to `<id>.npz` (the arrays,
  in the format `np.savez` writes, read back member by member: headers checked first, nothing unpickled).

Conventions
-----------
dtype
    The case's floating-point format: "float16", "bfloat16", "float32" or "float64". numpy has no
    bfloat16, so a bfloat16 case stores its float inputs in float32 *carrier* arrays whose values are
    all exactly bfloat16 (the low 16 bits of every float32 are zero; NaNs may carry any payload).
    Every float input uses the case's carrier; integer and bool arrays (step counters, masks) are
    allowed in any case; complex, object, string, structured and longdouble arrays are not.
inputs
    Stored in the order given, as read-only C-ordered little-endian copies whose memory cannot be
    made writeable again, inside a read-only mapping. The id does not depend on the order.
attrs
    Values are None, bool, int, float, str, or (nested) sequences of those. The canonical immutable
    form turns lists and tuples into tuples, numpy scalars into the Python scalar of the same value,
    and sorts the keys. bool, int and float stay distinct (`1`, `1.0` and `True` give different ids).
    In JSON every float is written as `{"float": float.hex(x)}` (exact, and covers nan/inf/-0.0;
    NaN attrs are canonical, their sign and payload are not kept); plain JSON numbers are also
    accepted on reading, for hand-written files.
id
    sha256 (first 16 hex digits) over a canonical encoding: a JSON header with op, mode, dtype,
    attrs (as above) and each input's name, dtype and shape, sorted by name, then each input's raw
    C-order bytes in that order. Changing this encoding changes every stored case's id; the golden
    test in tests/fuzz/test_case.py guards it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import tempfile
import types
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping, NamedTuple, Union

import numpy as np

__all__ = ["Case", "CaseFormatError", "AttrValue", "DTYPE_NAMES", "SCHEMA", "VERSION"]

SCHEMA = "normfuzz.case"
VERSION = 1
ID_LENGTH = 16

#: Largest array a case file may declare (per input and in total), checked before any array is read.
MAX_CASE_BYTES = 2 * 1024**3
#: Largest metadata file `Case.load` reads.
MAX_JSON_BYTES = 64 * 1024**2

DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")
_CARRIER = {
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<f4"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
_SHORT = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}

# Array dtypes a case may hold, keyed by their little-endian `dtype.str`.
_ARRAY_DTYPES = {
    np.dtype(s).str: np.dtype(s)
    for s in ("<f2", "<f4", "<f8", "|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8")
}

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # input names and attr keys
_OPNAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")  # op and mode
_PLAIN_STR_RE = re.compile(r"[A-Za-z0-9_.+\-]+\Z")  # attr strings shown unquoted in summary()
_ID_DOMAIN = b"normfuzz.case/1\n"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same case, same .npz bytes

AttrValue = Union[None, bool, int, float, str, tuple["AttrValue", ...]]


class CaseFormatError(ValueError):
    """A case, or a case file, is malformed; the message names the file (if any) and the problem."""


# --------------------------------------------------------------------------------------------------
# The record


@dataclass(frozen=True, eq=False, repr=False)
class Case:
    """One fuzzing input: `op` in `mode` at format `dtype`, with named input arrays and attrs.

    Construction validates and freezes everything (see the module docstring for conventions) and
    raises `CaseFormatError` on a bad name, dtype, array or attr. Two cases are equal when their
    content is (same encoding as `id`, full digest); input order does not matter.
    """

    op: str
    mode: str
    dtype: str
    inputs: Mapping[str, np.ndarray]
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)
    _digest_cache: str | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        for what, value in (("op", self.op), ("mode", self.mode)):
            if not isinstance(value, str) or not _OPNAME_RE.match(value):
                raise CaseFormatError(
                    f"{what}={value!r} is not a valid name; expected a str of letters, digits, '_', '.', '-'"
                )
        if not isinstance(self.dtype, str) or self.dtype not in _CARRIER:
            raise CaseFormatError(f"dtype={self.dtype!r} is not supported; expected one of {list(DTYPE_NAMES)}")
        if not isinstance(self.inputs, Mapping):
            raise CaseFormatError(f"inputs is a {type(self.inputs).__name__}; expected a mapping of name -> array")
        if not isinstance(self.attrs, Mapping):
            raise CaseFormatError(f"attrs is a {type(self.attrs).__name__}; expected a mapping of name -> value")

        inputs = {}
        for name, value in self.inputs.items():
            _check_name("input", name)
            inputs[name] = _freeze_array(name, value, self.dtype)
        attrs = {}
        for key in sorted(self.attrs, key=_sort_key_of_name):
            _check_name("attr", key)
            attrs[key] = _freeze_attr(key, self.attrs[key])

        object.__setattr__(self, "inputs", types.MappingProxyType(inputs))
        object.__setattr__(self, "attrs", types.MappingProxyType(attrs))

    @classmethod
    def family(cls, op: str, mode: str, dtype: str, arrays: Mapping[str, np.ndarray], size: int,
               attrs: Mapping[str, AttrValue] | None = None, shared: Collection[str] = ()) -> list["Case"]:
        """`size` cases of one signature: member i's input `k` is `arrays[k][i]`, or `arrays[k]`
        itself for `k` in `shared` (one array common to every member). The same cases, validated
        the same way, as `size` constructions of `Case`, for a fraction of the cost: each array is
        checked and frozen whole (every member's values at once), and the names, dtype and attrs,
        which every member shares, once (member 0 is constructed as any case; the others share
        its frozen attrs and hold read-only views of the frozen arrays)."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size={size!r} is invalid: expected an int >= 1")
        if not (isinstance(dtype, str) and dtype in _CARRIER):
            cls(op, mode, dtype, {}, {})  # raises the CaseFormatError any construction raises
        frozen = {}
        for k, a in arrays.items():
            _check_name("input", k)
            frozen[k] = _freeze_array(k, a, dtype)
            if k not in shared and (frozen[k].ndim == 0 or frozen[k].shape[0] != size):
                raise ValueError(f"input {k!r} has shape {np.shape(a)}; expected a leading axis of {size} members")
        first = cls(op, mode, dtype, {k: (a if k in shared else a[0]) for k, a in frozen.items()},
                    {} if attrs is None else attrs)
        members = [first]
        for i in range(1, size):
            c = object.__new__(cls)
            for name, value in (("op", first.op), ("mode", first.mode), ("dtype", first.dtype),
                                ("inputs", types.MappingProxyType(
                                    {k: (a if k in shared else a[i]) for k, a in frozen.items()})),
                                ("attrs", first.attrs), ("_digest_cache", None)):
                object.__setattr__(c, name, value)
            members.append(c)
        return members

    @property
    def _digest(self) -> str:
        # computed on first use: the content is frozen, and most cases of a packed family are
        # never identified (only a flagged member is)
        d = self._digest_cache
        if d is None:
            d = _content_digest(self)
            object.__setattr__(self, "_digest_cache", d)
        return d

    # ---- identity

    @property
    def id(self) -> str:
        """Content hash: the first 16 hex digits of the sha256 of the canonical encoding."""
        return self._digest[:ID_LENGTH]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Case):
            return NotImplemented
        return self._digest == other._digest

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        return f"<Case {self.id} {self.summary()}>"

    def __reduce__(self):
        # Pickling (multiprocessing, copy.deepcopy) goes through the lossless JSON form.
        return (_case_from_json, (self.to_json(),))

    # ---- human form

    def summary(self) -> str:
        """One line: `op/mode`, each input as `name[shape]`, the short dtype, then sorted `attr=value`.

        Example: `layer_norm/forward x[2,6,3] f16 eps=1e-05 normalized_ndim=1`. Integer and bool
        inputs get their array dtype appended (`step[]:i64`).
        """
        parts = [f"{self.op}/{self.mode}"]
        for name, arr in self.inputs.items():
            text = f"{name}[{','.join(str(n) for n in arr.shape)}]"
            if arr.dtype.kind != "f":
                text += ":" + ("bool" if arr.dtype.kind == "b" else f"{arr.dtype.kind}{8 * arr.dtype.itemsize}")
            parts.append(text)
        parts.append(_SHORT[self.dtype])
        parts.extend(f"{key}={_format_attr(value)}" for key, value in self.attrs.items())
        return " ".join(parts)

    # ---- JSON

    def to_json(self) -> str:
        """The case as one self-contained JSON document (arrays as base64 of little-endian bytes)."""
        doc = self._metadata()
        for entry in doc["inputs"]:
            entry["data"] = base64.b64encode(self.inputs[entry["name"]].data).decode("ascii")
        return json.dumps(doc, allow_nan=False)

    def to_wire(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The case as (metadata, arrays) for a framing that carries raw buffers (`fuzz.wire`): no
        base64, no copy beyond the framing's own; `from_wire` inverts it. The metadata's id is ""
        unless the case was already identified (hashing a packed case costs more than sending it)."""
        meta = self._metadata(identify=False)
        return meta, dict(self.inputs)

    @classmethod
    def from_wire(cls, meta: Any, arrays: Mapping[str, np.ndarray], *, check_id: bool = True) -> Case:
        """The case `to_wire` gave; raises `CaseFormatError` on anything malformed (the arrays must be
        the ones the metadata lists, with its dtypes and shapes). `check_id` checks a non-empty id."""
        source = "case message"
        header, specs = _parse_document(meta, source, embedded=False)
        if sorted(s.name for s in specs) != sorted(arrays):
            raise CaseFormatError(f"{source}: arrays {sorted(arrays)} do not match the inputs "
                                  f"{sorted(s.name for s in specs)}")
        for spec in specs:
            a = arrays[spec.name]
            if a.dtype != spec.dtype or tuple(a.shape) != tuple(spec.shape):
                raise CaseFormatError(f"{source}: input {spec.name!r} is {a.dtype.str} {list(a.shape)}; "
                                      f"the metadata says {spec.dtype.str} {list(spec.shape)}")
        return _build(header, dict(arrays), source, check_id=check_id and header.id != "")

    @classmethod
    def from_json(cls, text: str | bytes, *, check_id: bool = True) -> Case:
        """Parse `to_json()` output; raises `CaseFormatError` on anything malformed.

        With `check_id` (the default) the recorded id must match the content; pass False to accept a
        hand-edited document (the case then gets its new id).
        """
        source = "case JSON"
        doc = _parse_json(text, source)
        header, specs = _parse_document(doc, source, embedded=True)
        arrays = {}
        for spec in specs:
            try:
                raw = base64.b64decode(spec.data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise CaseFormatError(f"{source}: input {spec.name!r} data is not valid base64 ({exc})") from None
            if len(raw) != spec.nbytes:
                raise CaseFormatError(
                    f"{source}: input {spec.name!r} data has {len(raw)} bytes; "
                    f"shape {list(spec.shape)} of {spec.dtype.str} needs {spec.nbytes}"
                )
            arrays[spec.name] = np.frombuffer(raw, dtype=spec.dtype).reshape(spec.shape)
        return _build(header, arrays, source, check_id=check_id)

    # ---- files

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `<id>.npz` (arrays) and `<id>.json` (metadata) into `directory`; return the JSON path.

        The directory is created if needed. Each file is written to a temporary name and renamed, the
        .npz first, so a .json on disk always has its complete .npz. Saving the same case twice
        writes identical bytes.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        npz_path = directory / f"{self.id}.npz"
        json_path = directory / f"{self.id}.json"
        _atomic_write(npz_path, self._write_npz)
        text = _dump_metadata(self._metadata())
        _atomic_write(json_path, lambda fh: fh.write(text.encode("utf-8")))
        return json_path

    @classmethod
    def load(cls, path: str | os.PathLike, *, check_id: bool = True) -> Case:
        """Read a case saved by `save`, given its .json or its .npz path (the other is its sibling).

        Refuses (with `CaseFormatError` naming the file) unknown schema or version, missing or extra
        fields, arrays over 2 GiB (checked from the declared shapes, before reading any array),
        object or otherwise unsupported arrays (checked from the .npy headers; nothing is ever
        unpickled), arrays that differ from the declared dtype and shape, unreadable files, and, with
        `check_id`, a recorded id that does not match the content.
        """
        path = Path(path)
        if path.suffix not in (".json", ".npz"):
            raise CaseFormatError(f"{path}: expected the .json or .npz file of a saved case")
        json_path, npz_path = path.with_suffix(".json"), path.with_suffix(".npz")
        try:
            with open(json_path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size  # read() allocates its argument up front
                raw = fh.read(min(size, MAX_JSON_BYTES) + 1 if size else MAX_JSON_BYTES + 1)
        except OSError as exc:
            raise CaseFormatError(f"{json_path}: cannot read case metadata ({exc.strerror or exc})") from None
        if len(raw) > MAX_JSON_BYTES:
            raise CaseFormatError(f"{json_path}: metadata is over {MAX_JSON_BYTES} bytes; not a case file")
        doc = _parse_json(raw, str(json_path))
        header, specs = _parse_document(doc, str(json_path), embedded=False)
        arrays = _read_npz(npz_path, specs)
        return _build(header, arrays, str(json_path), check_id=check_id)

    # ---- helpers

    def _metadata(self, identify: bool = True) -> dict[str, Any]:
        # identify=False (the wire): the id only when already known, else "" (hashing a packed case
        # costs more than sending it, and a worker does not check the id)
        known = identify or self._digest_cache is not None
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "id": self.id if known else "",
            "op": self.op,
            "mode": self.mode,
            "dtype": self.dtype,
            "attrs": {key: _encode_attr(value) for key, value in self.attrs.items()},
            "inputs": [
                {"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)} for name, arr in self.inputs.items()
            ],
        }

    def _write_npz(self, fh) -> None:
        # The layout np.savez writes (one .npy member per array, stored, zip64), written by hand so
        # that any input name works (np.savez's own keyword arguments would clash with "file") and
        # the member timestamps are fixed.
        with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in self.inputs.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                with zf.open(info, mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)


def _dump_metadata(doc: dict[str, Any]) -> str:
    """JSON text of a metadata document: one top-level field per line, one input per line."""
    dump = lambda value: json.dumps(value, allow_nan=False)  # noqa: E731
    lines = [f"  {dump(key)}: {dump(value)}," for key, value in doc.items() if key != "inputs"]
    inputs = ",\n".join(f"    {dump(entry)}" for entry in doc["inputs"])
    lines.append(f'  "inputs": [\n{inputs}\n  ]' if inputs else '  "inputs": []')
    return "{\n" + "\n".join(lines) + "\n}\n"


def _case_from_json(text: str) -> Case:
    return Case.from_json(text)


# --------------------------------------------------------------------------------------------------
# Validation and canonical forms


def _sort_key_of_name(key: Any) -> tuple[int, str]:
    # Sorting must not fail on a bad key before _check_name reports it.
    return (0, key) if isinstance(key, str) else (1, repr(key))


def _check_name(what: str, name: Any) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CaseFormatError(f"{what} name {name!r} is not valid; expected an identifier (letters, digits, '_')")


def frozen_copy(arr: np.ndarray) -> np.ndarray:
    """A C-ordered copy of `arr` over an immutable bytes object (it cannot be made writeable)."""
    return np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=arr.dtype).reshape(arr.shape)


def _immutable(arr: np.ndarray) -> bool:
    """Whether `arr` is read-only and its memory belongs to a bytes object (nothing can write it)."""
    if arr.flags.writeable:
        return False
    base = arr.base
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return isinstance(base, bytes)


def _freeze_array(name: str, value: Any, case_dtype: str) -> np.ndarray:
    """A read-only, C-ordered, little-endian copy of `value`, checked against the case's dtype."""
    arr = np.asarray(value)
    dt = arr.dtype
    le = dt.newbyteorder("<") if dt.kind in "fiub" else dt
    if le.str not in _ARRAY_DTYPES:
        raise CaseFormatError(
            f"input {name!r} has dtype {dt}; expected a float16/float32/float64 carrier array, "
            f"or an integer or bool array"
        )
    carrier = _CARRIER[case_dtype]
    if le.kind == "f" and le != carrier:
        raise CaseFormatError(
            f"input {name!r} has dtype {dt.name} but a {case_dtype} case stores float inputs as {carrier.name}"
        )
    if dt.byteorder == ">":
        arr = arr.byteswap().view(le)  # bit-exact, keeps NaN payloads
    # Backed by an immutable bytes object, so the array cannot be made writeable again; an array
    # that already is (a received message's, another case's input or a view of one) is kept as is.
    if _immutable(arr) and arr.flags.c_contiguous and arr.dtype == le:
        frozen = arr
    else:
        frozen = frozen_copy(arr.view(le))
    if case_dtype == "bfloat16" and le.kind == "f":
        bits = frozen.view(np.uint32)
        bad = ((bits & np.uint32(0xFFFF)) != 0) & ~np.isnan(frozen)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise CaseFormatError(
                f"input {name!r} is not bfloat16-representable at index {index}: "
                f"{float(frozen[index])!r} (bits {int(bits[index]):#010x}); a bfloat16 case stores "
                f"float32 carriers whose low 16 bits are zero (except NaN)"
            )
    return frozen


def _freeze_attr(key: str, value: Any) -> AttrValue:
    """The canonical immutable form of an attr value (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if isinstance(value, np.floating) and value.dtype.itemsize > 8:
            raise CaseFormatError(f"attr {key!r} is a {value.dtype.name}, which a float attr cannot hold exactly")
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_attr(key, item) for item in value)
    raise CaseFormatError(
        f"attr {key!r} has type {type(value).__name__}; expected None, bool, int, float, str, "
        f"or a list/tuple of those"
    )


def _encode_attr(value: AttrValue) -> Any:
    """JSON form of a frozen attr value: floats as {"float": hex}, tuples as lists."""
    if isinstance(value, float):
        return {"float": value.hex()}
    if isinstance(value, tuple):
        return [_encode_attr(item) for item in value]
    return value


def _decode_attr(value: Any, where: str) -> AttrValue:
    """Inverse of `_encode_attr`; also accepts plain JSON numbers as floats."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return tuple(_decode_attr(item, where) for item in value)
    if isinstance(value, dict) and set(value) == {"float"} and isinstance(value["float"], str):
        try:
            return float.fromhex(value["float"])
        except ValueError:
            pass
        raise CaseFormatError(f"{where}: {value['float']!r} is not a float in float.hex() form")
    raise CaseFormatError(
        f"{where}: {json.dumps(value)[:80]} is not an attr value; expected null, bool, number, string, "
        f'list, or {{"float": "<float.hex()>"}}'
    )


def _format_attr(value: AttrValue) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(_format_attr(item) for item in value) + "]"
    if isinstance(value, str):
        return value if _PLAIN_STR_RE.match(value) else repr(value)
    return repr(value)


def _content_digest(case: Case) -> str:
    """Full sha256 hex digest of the canonical encoding (see the module docstring)."""
    names = sorted(case.inputs)
    header = {
        "op": case.op,
        "mode": case.mode,
        "dtype": case.dtype,
        "attrs": {key: _encode_attr(value) for key, value in case.attrs.items()},
        "inputs": [[name, case.inputs[name].dtype.str, list(case.inputs[name].shape)] for name in names],
    }
    blob = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    h = hashlib.sha256(_ID_DOMAIN)
    h.update(len(blob).to_bytes(8, "little"))
    h.update(blob.encode("ascii"))
    for name in names:
        data = case.inputs[name].data  # C-contiguous, so this is the raw bytes without a copy
        h.update(data.nbytes.to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Reading documents and files


class _Header(NamedTuple):
    id: str
    op: str
    mode: str
    dtype: str
    attrs: dict[str, AttrValue]


class _Spec(NamedTuple):
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    nbytes: int
    data: str | None  # base64, in the embedded (to_json) form only


_TOP_KEYS = {"schema", "version", "id", "op", "mode", "dtype", "attrs", "inputs"}


def _parse_json(text: str | bytes, source: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CaseFormatError(f"{source}: not valid JSON ({exc})") from None


def _parse_document(doc: Any, source: str, *, embedded: bool) -> tuple[_Header, list[_Spec]]:
    """Check a case document's structure and declared sizes; no array data is touched."""
    if not isinstance(doc, dict):
        raise CaseFormatError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise CaseFormatError(f"{source}: schema is {doc.get('schema')!r}; expected {SCHEMA!r}")
    version = doc.get("version")
    if type(version) is not int or version != VERSION:
        raise CaseFormatError(
            f"{source}: case format version {version!r} is not supported; this normfuzz reads {VERSION}"
        )
    if set(doc) != _TOP_KEYS:
        missing, extra = sorted(_TOP_KEYS - set(doc)), sorted(set(doc) - _TOP_KEYS)
        raise CaseFormatError(f"{source}: fields missing {missing}, unexpected {extra}")
    for key in ("id", "op", "mode", "dtype"):
        if not isinstance(doc[key], str):
            raise CaseFormatError(f"{source}: {key} is {doc[key]!r}; expected a string")
    if not isinstance(doc["attrs"], dict):
        raise CaseFormatError(f"{source}: attrs is {type(doc['attrs']).__name__}; expected an object")
    try:
        attrs = {key: _decode_attr(value, f"{source}: attr {key!r}") for key, value in doc["attrs"].items()}
    except RecursionError:
        raise CaseFormatError(f"{source}: attrs are nested too deeply") from None
    if not isinstance(doc["inputs"], list):
        raise CaseFormatError(f"{source}: inputs is {type(doc['inputs']).__name__}; expected a list")

    entry_keys = {"name", "dtype", "shape"} | ({"data"} if embedded else set())
    specs: list[_Spec] = []
    total = 0
    for i, entry in enumerate(doc["inputs"]):
        if not isinstance(entry, dict) or set(entry) != entry_keys:
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise CaseFormatError(f"{source}: inputs[{i}] has {got}; expected an object with keys {sorted(entry_keys)}")
        name, dtype_str, shape = entry["name"], entry["dtype"], entry["shape"]
        if not isinstance(name, str) or name in {s.name for s in specs}:
            raise CaseFormatError(f"{source}: inputs[{i}] name {name!r} is not a string or is repeated")
        if not isinstance(dtype_str, str) or dtype_str not in _ARRAY_DTYPES:
            raise CaseFormatError(
                f"{source}: input {name!r} dtype {dtype_str!r} is not allowed; expected one of {sorted(_ARRAY_DTYPES)}"
            )
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise CaseFormatError(f"{source}: input {name!r} shape {shape!r} is not a list of non-negative ints")
        dt = _ARRAY_DTYPES[dtype_str]
        nbytes = math.prod(shape) * dt.itemsize
        total += nbytes
        if nbytes > MAX_CASE_BYTES or total > MAX_CASE_BYTES:
            raise CaseFormatError(
                f"{source}: input {name!r} declares shape {shape} of {dtype_str} ({_gib(nbytes)}, "
                f"{_gib(total)} for the inputs so far); a case holds at most {_gib(MAX_CASE_BYTES)}"
            )
        data = entry.get("data")
        if embedded and not isinstance(data, str):
            raise CaseFormatError(f"{source}: input {name!r} data is {type(data).__name__}; expected a base64 string")
        specs.append(_Spec(name, dt, tuple(shape), nbytes, data))
    header = _Header(doc["id"], doc["op"], doc["mode"], doc["dtype"], attrs)
    return header, specs


def _gib(nbytes: int) -> str:
    return f"{nbytes / 1024**3:.3g} GiB"


def _read_npy_header(member, spec: _Spec, source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the .npy header at the start of `member` (never unpickles)."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise CaseFormatError(f"{source}: {spec.name}.npy has .npy format version {version}; expected 1.0 or 2.0")


def _read_npz(npz_path: Path, specs: list[_Spec]) -> dict[str, np.ndarray]:
    """Read the declared arrays from `npz_path`, checking every .npy header before any data."""
    source = str(npz_path)
    try:
        with zipfile.ZipFile(npz_path) as zf:
            members = set(zf.namelist())
            expected = {spec.name + ".npy" for spec in specs}
            if members != expected:
                raise CaseFormatError(
                    f"{source}: arrays missing {sorted(expected - members)}, unexpected {sorted(members - expected)}"
                )
            fortran = {}
            for spec in specs:
                with zf.open(spec.name + ".npy") as member:
                    shape, fortran[spec.name], dt = _read_npy_header(member, spec, source)
                if dt.hasobject:
                    raise CaseFormatError(
                        f"{source}: {spec.name}.npy holds an object array (dtype {dt}); case files hold "
                        f"plain numeric arrays and are never unpickled"
                    )
                if dt.str != spec.dtype.str or tuple(shape) != spec.shape:
                    raise CaseFormatError(
                        f"{source}: {spec.name}.npy is {dt.str} {list(shape)}; the metadata declares "
                        f"{spec.dtype.str} {list(spec.shape)}"
                    )
            # The data, read by hand rather than by np.load, which allocates the declared size first:
            # memory grows only with the bytes the file really holds (a truncated member, or one
            # whose zip entry lies about its size, is refused without a huge allocation).
            arrays = {}
            for spec in specs:
                with zf.open(spec.name + ".npy") as member:
                    _read_npy_header(member, spec, source)
                    data = bytearray()
                    while len(data) <= spec.nbytes:
                        chunk = member.read(min(spec.nbytes + 1 - len(data), 1 << 24))
                        if not chunk:
                            break
                        data += chunk
                if len(data) != spec.nbytes:
                    raise CaseFormatError(
                        f"{source}: {spec.name}.npy holds {'more than ' if len(data) > spec.nbytes else ''}"
                        f"{min(len(data), spec.nbytes)} bytes of array data; shape {list(spec.shape)} of "
                        f"{spec.dtype.str} needs {spec.nbytes}"
                    )
                flat = np.frombuffer(data, dtype=spec.dtype)
                arrays[spec.name] = (flat.reshape(spec.shape[::-1]).T if fortran[spec.name] and spec.shape
                                     else flat.reshape(spec.shape))
        return arrays
    except CaseFormatError:
        raise
    except FileNotFoundError:
        raise CaseFormatError(f"{source}: missing; a saved case needs its .json and its .npz") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise CaseFormatError(f"{source}: not a readable case .npz ({type(exc).__name__}: {exc})") from None


def _build(header: _Header, arrays: dict[str, np.ndarray], source: str, *, check_id: bool) -> Case:
    try:
        case = Case(header.op, header.mode, header.dtype, arrays, header.attrs)
    except CaseFormatError as exc:
        raise CaseFormatError(f"{source}: {exc}") from None
    if check_id and case.id != header.id:
        raise CaseFormatError(
            f"{source}: recorded id {header.id!r} does not match the content's id {case.id!r} "
            f"(edited or corrupted; load with check_id=False to accept an edited case)"
        )
    return case


def _atomic_write(path: Path, write) -> None:
    """Call `write(binary file)` on a temporary file next to `path`, then rename it to `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; case files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
