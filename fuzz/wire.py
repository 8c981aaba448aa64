"""Framing of messages between the campaign process and its workers (no pickle).

A message is a JSON header plus raw array buffers:

    [8-byte little-endian header length][header JSON][buffer 0][buffer 1]...

The header's "arrays" entry lists {name, dtype, shape, nbytes} for the buffers in order; dtypes
are numpy dtype strings of plain numeric types only (object arrays cannot be sent).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Mapping

import numpy as np

_LEN = struct.Struct("<Q")
MAX_HEADER = 64 * 1024 * 1024
_KINDS = "fiub"


class WireError(RuntimeError):
    """A malformed message or a peer that closed the pipe mid-message."""


class PeerClosed(WireError):
    """The other end closed the pipe before a message started (a dead worker)."""


def encode(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] = {}) -> bytes:
    """One message: `header` (JSON-able) with `arrays` appended as raw C-order buffers."""
    metas, bufs = [], []
    for name, a in arrays.items():
        a = np.asarray(a)
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
            a = a.copy(order="C")
        if a.dtype.kind not in _KINDS:
            raise WireError(f"array {name!r} has dtype {a.dtype}: only numeric arrays can be sent")
        metas.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape), "nbytes": a.nbytes})
        bufs.append(a.tobytes())
    h = json.dumps({**header, "arrays": metas}, sort_keys=True).encode()
    return b"".join([_LEN.pack(len(h)), h, *bufs])


def _read_exact(fd: int, n: int, *, start: bool = False) -> bytes:
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, min(n - got, 1 << 20))
        if not b:
            if start and got == 0:
                raise PeerClosed("peer closed the pipe")
            raise WireError(f"peer closed the pipe after {got} of {n} bytes")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_message(fd: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read one message from file descriptor `fd` (blocking)."""
    (n,) = _LEN.unpack(_read_exact(fd, _LEN.size, start=True))
    if n > MAX_HEADER:
        raise WireError(f"header of {n} bytes exceeds {MAX_HEADER}")
    header = json.loads(_read_exact(fd, n))
    arrays = {}
    for m in header.pop("arrays", []):
        dt = np.dtype(m["dtype"])
        if dt.kind not in _KINDS:
            raise WireError(f"array {m['name']!r} has dtype {dt}: refused")
        buf = _read_exact(fd, int(m["nbytes"])) if m["nbytes"] else b""
        arrays[m["name"]] = np.frombuffer(buf, dtype=dt).reshape(m["shape"])
    return header, arrays


def write_message(fd: int, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] = {}) -> None:
    data = memoryview(encode(header, arrays))
    while data:
        n = os.write(fd, data)
        data = data[n:]


def batch(parts) -> dict[str, np.ndarray]:
    """The arrays of several cases (or answers) as one message's arrays: part i's "name" becomes
    "i/name"; `unbatch` inverts it."""
    return {f"{i}/{k}": v for i, part in enumerate(parts) for k, v in part.items()}


def unbatch(arrays: Mapping[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    """The `n` parts `batch` joined (a name without a valid index raises WireError)."""
    parts: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
    for k, v in arrays.items():
        i, sep, name = k.partition("/")
        if not sep or not i.isdigit() or int(i) >= n:
            raise WireError(f"array {k!r} names no part of a batch of {n}")
        parts[int(i)][name] = v
    return parts
