"""The findings database: one SQLite file per campaign, written as the campaign runs, read by reports.

`Store.create(folder, campaign)` makes `<folder>/findings.sqlite`; `Store.open(folder)` opens it
again (to resume, to set bucket statuses), `Store.open(folder, readonly=True)` reads it (reports,
repro, baselines). A path ending in `.sqlite`, `.sqlite3` or `.db` names the database file itself;
any other path is the campaign folder. Records come back as plain JSON-serializable dicts; cases
come back as `fuzz.case.Case`. Nothing is ever pickled.

Files in the campaign folder
----------------------------
findings.sqlite
    The database. `Store.create` builds it under a temporary name (`.findings.sqlite.*.tmp`) and
    renames it, so the file under its final name is always complete. While connections are open
    SQLite keeps `findings.sqlite-wal` and `findings.sqlite-shm` beside it (the write-ahead log and
    its index); the last writer to close folds the log into the file and removes both (a reader
    may leave them behind, empty).
findings.sqlite.lock
    Held (flock) by the one process that writes the database; a second writer is refused with the
    holder's pid. The kernel drops the lock when the process dies, even by SIGKILL, so a campaign
    stored as running whose lock is free reads as interrupted.
summary.json
    Written by `export_summary_json()`: the machine-readable summary (campaign, totals, buckets).

Schema (version 1)
------------------
The header of the file carries `PRAGMA application_id` = 0x6E667A64 ("nfzd") and
`PRAGMA user_version` = the schema version, so a foreign or newer file is recognised from its
first 100 bytes, before SQLite is asked to open it. Timestamps are ISO 8601 UTC strings
(`2026-05-09T07:35:00.123456Z`, sortable as text). JSON columns hold Python `json` text (NaN and
infinities as Python writes them). A max_ratio that is NaN is stored as NULL.

meta(key, value)
    `schema` = "normfuzz.findings", `version` = "1", `created_by` (normfuzz version), `created_at`.
campaign(id, config, seed, platform, frameworks, extra, started_at, finished_at, status,
         resumes, cases_run, seconds)
    One row. config, platform, frameworks (runner -> framework version, `set_versions`) and extra
    (any other keys given to `create`, updated by the info given to `finish`) are JSON; seed is a
    decimal string (any size of int); status is running / interrupted / finished / failed;
    cases_run and seconds (active time, summed over resumed sessions) are set by each
    `checkpoint()` and by `finish()`.
cases(id, op, mode, dtype, regime, summary, case_json)
    Only cases that produced a finding or are a bucket's minimal reproducer; case_json is the full
    `Case.to_json()` (lossless), id is `Case.id`.
outcomes(case_id, runner, status, error_type, error, detail, seconds, exit_code, signal,
         max_ratio, worst_output, worst_index, nan_mismatches, verdict)
    The outcome behind each finding, with its verdict fields (worst_index is a JSON list; verdict
    the JSON of the whole verdict, `to_dict()`, when one was given). Primary key (case_id, runner).
    Text fields are cut to 100,000 characters; lone surrogates (not UTF-8) are stored as
    backslash escapes.
findings(id, campaign_id, case_id, runner, op, mode, dtype, regime, category, signature,
         explanation, max_ratio, details, bucket_key, created_at)
    Every finding, id autoincrement; details is JSON. UNIQUE (campaign_id, case_id, runner): a case
    re-run after a kill records nothing new.
buckets(key, op, mode, runner, dtype, category, signature, status, known_issue, count, first_seen,
        last_seen, min_case_id, min_ratio, min_explanation, min_summary)
    One row per dedup key (`bucket_key`, built from the six structured fields, never from message
    text). count is the number of findings in the bucket in this campaign (0 for a fixed bucket);
    status: new (first seen here), known (matches a known issue; known_issue holds the link or
    text), recurring (also in the baseline campaign), fixed (in the baseline, not seen here: added
    by `add_baseline_bucket`). Statuses are set by `set_bucket_status` (fuzz/baseline.py compares
    with a baseline and applies known issues); a finding recorded into a fixed bucket makes it
    recurring. min_* describe the minimal reproducer (`set_minimal`).
counts(op, mode, runner, dtype, regime, result, count)
    Per-combination counters (result is an outcome status or a verdict category; regime '' when
    none). Buffered in memory and written with the next `checkpoint()`.
unsupported(runner, op, mode, dtype, reason, count)
    How often each runner could not express a combination, and why; buffered like counts.
progress(id = 1, state, updated_at)
    The campaign's checkpoint for --resume: one row, the JSON state it gave `checkpoint()`;
    `Store.open(folder).resume()` returns it.
outputs(case_id, runner, npz)
    The runner's output arrays for a bucket's minimal reproducer (`set_minimal(..., outputs=)`), so
    that a report can show them against the oracle without re-running the framework: npz is the
    bytes of an uncompressed `.npz` (one `<name>.npy` member per output, written and read without
    pickle). Outputs totalling more than `MAX_OUTPUT_BYTES` are not stored. Primary key
    (case_id, runner); `outputs(case_id, runner)` reads them back.

What is written when, and durability
------------------------------------
- `record_finding` commits the case, the outcome, the finding and the bucket update in one
  transaction before it returns.
- `add_counts` / `add_unsupported` only add to in-memory counters. `checkpoint(state)` writes them,
  the progress state, cases_run and seconds in one transaction; `flush()`, `finish()` and `close()`
  also write them. So after a kill the counters in the database are exactly those of the cases the
  last checkpoint covers: a resumed campaign re-runs the rest and neither loses nor double counts.
  Findings of re-run cases are not double counted either (the UNIQUE constraint above).
- Every write is one `BEGIN IMMEDIATE ... COMMIT` transaction, rolled back on any error; a failure
  never leaves part of a transaction behind.
- journal_mode=WAL, synchronous=NORMAL by default: a committed transaction is in the log in the
  operating system's file cache when `commit` returns, so it survives the process being killed at
  any moment (SIGKILL, OOM killer) and the file stays consistent (PRAGMA integrity_check). An
  operating-system crash or power loss cannot corrupt the file, but may lose the transactions
  committed since the last WAL checkpoint (SQLite syncs the log at each checkpoint; `finish()` and
  `close()` checkpoint). `synchronous="FULL"` syncs the log at every commit and closes that window,
  at the price of one fsync per finding. NORMAL is the default because the requirement is the
  process kill, and a finding storm (a runner that fails every case) must not be throttled by disk
  latency: on the development machine's disk record_finding ran at 3,000 to 7,000 findings/s with
  NORMAL and mostly 200 to 300/s with FULL (`pytest tests/fuzz/test_store.py -k throughput -s`
  prints both).
- Every sqlite3 or OS error (disk full, read-only folder, a lock held by another process beyond
  the busy timeout) becomes `StoreError`, whose message names the file and the cause.

Opening refuses (with `StoreError`, never touching the file): a file that is not SQLite, a SQLite
file of another application, and a schema version newer than this normfuzz reads. Misuse by the
caller (a bad argument) raises `ValueError` or `TypeError`.

One `Store` is used from one thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import platform
import re
import secrets
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from .case import Case, CaseFormatError
from .outcome import Outcome

try:  # POSIX; without it there is no writer lock (documented above)
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Store", "StoreError", "Recorded", "bucket_key", "parse_bucket_key", "platform_info",
    "database_path", "SCHEMA", "VERSION", "APPLICATION_ID", "DB_NAME", "SUMMARY_NAME",
    "BUCKET_STATUSES", "CAMPAIGN_STATUSES", "MAX_OUTPUT_BYTES",
]

SCHEMA = "normfuzz.findings"
VERSION = 1
APPLICATION_ID = 0x6E667A64  # "nfzd"
DB_NAME = "findings.sqlite"
SUMMARY_NAME = "summary.json"
SUMMARY_SCHEMA = "normfuzz.summary"
DB_SUFFIXES = (".sqlite", ".sqlite3", ".db")

BUCKET_STATUSES = ("new", "known", "recurring", "fixed")
CAMPAIGN_STATUSES = ("running", "interrupted", "finished", "failed")
BUCKET_FIELDS = ("op", "mode", "runner", "category", "signature", "dtype")  # bucket_key order
COUNT_FIELDS = ("op", "mode", "runner", "dtype", "regime", "result")
UNSUPPORTED_FIELDS = ("runner", "op", "mode", "dtype", "reason")

MAX_TEXT = 100_000  # characters kept of an outcome's error/detail text and a finding's explanation
MAX_OUTPUT_BYTES = 16 * 1024**2  # a minimal reproducer's outputs larger than this (in total) are not stored
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
    """The database cannot be created, opened, read or written; the message names the file and why."""


class Recorded(NamedTuple):
    """What `Store.record_finding` did: the finding's id, its bucket, and whether the bucket is new."""

    finding_id: int
    bucket_key: str
    is_new_bucket: bool


# --------------------------------------------------------------------------------------------------
# Schema

_TABLES = (
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE campaign (
        id TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        seed TEXT,
        platform TEXT NOT NULL,
        frameworks TEXT NOT NULL,
        extra TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL CHECK (status IN ('running', 'interrupted', 'finished', 'failed')),
        resumes INTEGER NOT NULL DEFAULT 0,
        cases_run INTEGER NOT NULL DEFAULT 0,
        seconds REAL NOT NULL DEFAULT 0)""",
    """CREATE TABLE cases (
        id TEXT PRIMARY KEY,
        op TEXT NOT NULL,
        mode TEXT NOT NULL,
        dtype TEXT NOT NULL,
        regime TEXT,
        summary TEXT NOT NULL,
        case_json TEXT NOT NULL)""",
    """CREATE TABLE outcomes (
        case_id TEXT NOT NULL REFERENCES cases(id),
        runner TEXT NOT NULL,
        status TEXT NOT NULL,
        error_type TEXT NOT NULL,
        error TEXT NOT NULL,
        detail TEXT NOT NULL,
        seconds REAL,
        exit_code INTEGER,
        signal INTEGER,
        max_ratio REAL,
        worst_output TEXT,
        worst_index TEXT,
        nan_mismatches INTEGER,
        verdict TEXT,
        PRIMARY KEY (case_id, runner))""",
    """CREATE TABLE buckets (
        key TEXT PRIMARY KEY,
        op TEXT NOT NULL,
        mode TEXT NOT NULL,
        runner TEXT NOT NULL,
        dtype TEXT NOT NULL,
        category TEXT NOT NULL,
        signature TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('new', 'known', 'recurring', 'fixed')),
        known_issue TEXT,
        count INTEGER NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        min_case_id TEXT REFERENCES cases(id),
        min_ratio REAL,
        min_explanation TEXT,
        min_summary TEXT)""",
    """CREATE TABLE findings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        campaign_id TEXT NOT NULL REFERENCES campaign(id),
        case_id TEXT NOT NULL REFERENCES cases(id),
        runner TEXT NOT NULL,
        op TEXT NOT NULL,
        mode TEXT NOT NULL,
        dtype TEXT NOT NULL,
        regime TEXT,
        category TEXT NOT NULL,
        signature TEXT NOT NULL,
        explanation TEXT NOT NULL,
        max_ratio REAL,
        details TEXT NOT NULL,
        bucket_key TEXT NOT NULL REFERENCES buckets(key),
        created_at TEXT NOT NULL,
        UNIQUE (campaign_id, case_id, runner))""",
    "CREATE INDEX findings_by_bucket ON findings(bucket_key, id)",
    """CREATE TABLE counts (
        op TEXT NOT NULL,
        mode TEXT NOT NULL,
        runner TEXT NOT NULL,
        dtype TEXT NOT NULL,
        regime TEXT NOT NULL,
        result TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (op, mode, runner, dtype, regime, result)) WITHOUT ROWID""",
    """CREATE TABLE unsupported (
        runner TEXT NOT NULL,
        op TEXT NOT NULL,
        mode TEXT NOT NULL,
        dtype TEXT NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (runner, op, mode, dtype, reason)) WITHOUT ROWID""",
    """CREATE TABLE progress (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL)""",
    """CREATE TABLE outputs (
        case_id TEXT NOT NULL REFERENCES cases(id),
        runner TEXT NOT NULL,
        npz BLOB NOT NULL,
        PRIMARY KEY (case_id, runner))""",
)
_TABLE_NAMES = ("meta", "campaign", "cases", "outcomes", "buckets", "findings", "counts", "unsupported", "progress",
                "outputs")

_INSERT_CASE = ("INSERT INTO cases (id, op, mode, dtype, regime, summary, case_json) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING")
_INSERT_OUTCOME = (
    "INSERT INTO outcomes (case_id, runner, status, error_type, error, detail, seconds, exit_code, signal, "
    "max_ratio, worst_output, worst_index, nan_mismatches, verdict) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (case_id, runner) DO NOTHING"
)
_FIND_FINDING = "SELECT id, bucket_key FROM findings WHERE campaign_id = ? AND case_id = ? AND runner = ?"
_INSERT_BUCKET = (
    "INSERT INTO buckets (key, op, mode, runner, dtype, category, signature, status, known_issue, count, "
    "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT (key) DO NOTHING"
)
_INSERT_FINDING = (
    "INSERT INTO findings (campaign_id, case_id, runner, op, mode, dtype, regime, category, signature, "
    "explanation, max_ratio, details, bucket_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A known issue given by triage makes the bucket known; a fixed bucket seen again recurs (or is known
# again, when it has a known issue); any other status is kept.
_COUNT_FINDING = (
    "UPDATE buckets SET count = count + 1, last_seen = ?, "
    "status = CASE WHEN ? IS NOT NULL THEN 'known' "
    "WHEN status = 'fixed' THEN (CASE WHEN known_issue IS NOT NULL THEN 'known' ELSE 'recurring' END) "
    "ELSE status END, "
    "known_issue = COALESCE(?, known_issue) WHERE key = ?"
)
_ADD_COUNT = (
    "INSERT INTO counts (op, mode, runner, dtype, regime, result, count) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (op, mode, runner, dtype, regime, result) DO UPDATE SET count = count + excluded.count"
)
_ADD_UNSUPPORTED = (
    "INSERT INTO unsupported (runner, op, mode, dtype, reason, count) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (runner, op, mode, dtype, reason) DO UPDATE SET count = count + excluded.count"
)
_BUCKET_COLUMNS = ("key", "op", "mode", "runner", "dtype", "category", "signature", "status", "known_issue",
                   "count", "first_seen", "last_seen", "min_case_id", "min_ratio", "min_explanation", "min_summary")
_FINDING_COLUMNS = ("id", "campaign_id", "case_id", "runner", "op", "mode", "dtype", "regime", "category",
                    "signature", "explanation", "max_ratio", "details", "bucket_key", "created_at")
_OUTCOME_COLUMNS = ("case_id", "runner", "status", "error_type", "error", "detail", "seconds", "exit_code",
                    "signal", "max_ratio", "worst_output", "worst_index", "nan_mismatches", "verdict")


# --------------------------------------------------------------------------------------------------
# Keys, paths, platform


def _escape(field: str) -> str:
    return field.replace("%", "%25").replace("|", "%7C")


def _unescape(text: str) -> str:
    return re.sub(r"%(25|7C)", lambda m: "%" if m.group(1) == "25" else "|", text)


def bucket_id(key: str) -> str:
    """A short, stable id of a bucket key (10 hex digits of its sha256), for command lines."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:10]


def bucket_key(op: str, mode: str, runner: str, category: str, signature: str, dtype: str) -> str:
    """The dedup key of a finding: `op|mode|runner|category|signature|dtype`.

    Built from the six structured fields only (never from message text). Inside a field '%' is
    written `%25` and '|' is written `%7C`, so two different field tuples never give the same key
    (`parse_bucket_key` is the inverse); a field without those two characters appears as is, e.g.
    `layer_norm|forward|torch.functional|accuracy|eps_outside_sqrt|float32`. Every field must be a
    non-empty str.
    """
    fields = {"op": op, "mode": mode, "runner": runner, "category": category, "signature": signature,
              "dtype": dtype}
    for name, value in fields.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"bucket field {name}={value!r}: expected a non-empty str")
    return "|".join(_escape(v) for v in fields.values())


def parse_bucket_key(key: str) -> dict[str, str]:
    """The six fields (op, mode, runner, category, signature, dtype) of a key made by `bucket_key`;
    ValueError if `key` is not such a key."""
    parts = key.split("|") if isinstance(key, str) else []
    if len(parts) != 6:
        raise ValueError(f"{key!r} is not a bucket key; expected 'op|mode|runner|category|signature|dtype'")
    fields = dict(zip(BUCKET_FIELDS, (_unescape(p) for p in parts)))
    if bucket_key(**fields) != key:
        raise ValueError(f"{key!r} is not a canonical bucket key (fields {fields})")
    return fields


def database_path(path: str | os.PathLike) -> Path:
    """The database file for `path`: itself if it ends in .sqlite/.sqlite3/.db, else `path/findings.sqlite`."""
    path = Path(path)
    if path.suffix.lower() in DB_SUFFIXES and not path.is_dir():
        return path
    return path / DB_NAME


def platform_info() -> dict[str, Any]:
    """Where the campaign runs: python, os, machine, numpy, sqlite and normfuzz versions, cpu count."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        normfuzz = dist_version("normfuzz")
    except PackageNotFoundError:
        from . import __version__ as normfuzz
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "normfuzz": normfuzz,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------------
# JSON and values


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True, default=_json_default)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what} cannot be stored as JSON: {exc}") from None


def _loads(text: str | None) -> Any:
    try:
        return None if text is None else json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:  # only a damaged or edited file holds bad JSON
        raise StoreError(f"a stored JSON value does not load ({type(exc).__name__}: {exc}); the database is "
                         f"damaged or was edited") from None


def _strict_json(obj: Any) -> Any:
    """`obj` with non-finite floats as the strings 'nan', 'inf', '-inf' (for strict JSON readers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    return obj


def _ratio(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what}={value!r}: expected a float or None")
    value = float(value)
    return None if math.isnan(value) else value  # SQLite stores NaN as NULL anyway; say so explicitly


def _text(value: Any, what: str, *, limit: int = MAX_TEXT) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{what}={value!r}: expected a str")
    if len(value) > limit:
        value = value[:limit] + f" ... [{len(value) - limit} more characters cut by the store]"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (text decoded with surrogateescape): SQLite needs UTF-8
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}={value!r}: expected a non-empty str")
    return value


def _outputs_npz(outputs: Mapping[str, Any]) -> bytes | None:
    """The .npz bytes of named numeric arrays (no pickle), or None when they total more than
    `MAX_OUTPUT_BYTES`."""
    import io

    if not isinstance(outputs, Mapping):
        raise TypeError(f"outputs is a {type(outputs).__name__}; expected a mapping name -> array")
    arrays = {}
    for name, value in outputs.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"output name {name!r}: expected a non-empty str")
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"output {name!r} has dtype {a.dtype}; expected a numeric (bool, int, float) array")
        arrays[name] = a
    if sum(a.nbytes for a in arrays.values()) > MAX_OUTPUT_BYTES:
        return None
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_STORED) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.require(a, requirements="C"), allow_pickle=False)
    return buf.getvalue()


def _count(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{what}={n!r}: expected a non-negative int")
    return int(n)


# --------------------------------------------------------------------------------------------------
# Errors


def _cause(exc: BaseException, timeout: float | None = None) -> str:
    """A sentence for the cause of a sqlite3 or OS error."""
    if isinstance(exc, OSError) and not isinstance(exc, sqlite3.Error):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"the disk is full ({exc.strerror})"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"the folder or file is not writable ({exc.strerror})"
        if exc.errno == errno.EFBIG:
            return f"the file size limit is reached ({exc.strerror})"
        return exc.strerror or str(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    msg = str(exc)
    if name.startswith("SQLITE_FULL") or "database or disk is full" in msg:
        cause = "the disk is full"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in msg:
        waited = f" (waited {timeout:g} s)" if timeout is not None else ""
        cause = f"the database is locked by another process or connection{waited}"
    elif name.startswith("SQLITE_READONLY") or "readonly" in msg:
        cause = "the database or its folder is read-only"
    elif name.startswith("SQLITE_CANTOPEN") or "unable to open" in msg:
        cause = "the file cannot be opened or created (missing, or its folder is not writable)"
    elif name.startswith("SQLITE_IOERR") or "disk I/O error" in msg:
        cause = "an I/O error (disk full, file size limit, or a failing disk)"
    elif name.startswith("SQLITE_NOTADB"):
        cause = "the file is not a database"
    elif name.startswith("SQLITE_CORRUPT"):
        cause = "the database is corrupt (PRAGMA integrity_check says where)"
    else:
        cause = msg
    return f"{cause} [sqlite: {msg}{', ' + name if name else ''}]"


# --------------------------------------------------------------------------------------------------
# Validation of a file before SQLite touches it


def _check_header(db: Path) -> int:
    """Read the 100-byte SQLite header of `db` and refuse anything that is not a normfuzz findings
    database; return the schema version the header records. Only reads the file."""
    try:
        with open(db, "rb") as fh:
            header = fh.read(100)
    except IsADirectoryError:
        raise StoreError(f"{db}: is a folder; expected a normfuzz findings database file") from None
    except OSError as exc:
        raise StoreError(f"{db}: cannot read ({_cause(exc)})") from None
    if not header:
        raise StoreError(f"{db}: is an empty file, not a normfuzz findings database")
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise StoreError(
            f"{db}: is not a SQLite database (it starts with {header[:16]!r}; a SQLite file starts with "
            f"{_SQLITE_MAGIC!r}); expected a normfuzz findings database made by Store.create"
        )
    app_id = int.from_bytes(header[68:72], "big")
    if app_id != APPLICATION_ID:
        raise StoreError(
            f"{db}: is a SQLite database of another application (application_id {app_id:#010x}), not a "
            f"normfuzz findings database (application_id {APPLICATION_ID:#010x}); refusing to open it"
        )
    return int.from_bytes(header[60:64], "big", signed=True)


def _check_version(db: Path, version: int) -> None:
    if version > VERSION:
        raise StoreError(
            f"{db}: findings database schema version {version} is newer than this normfuzz reads "
            f"(version {VERSION}); open it with the normfuzz that wrote it, or a newer one"
        )
    if version < 1:
        raise StoreError(
            f"{db}: findings database schema version {version} is not valid (expected 1..{VERSION}); "
            f"the file is damaged or was not made by Store.create"
        )


def _wal_has_content(db: Path) -> bool:
    try:
        return os.path.getsize(f"{db}-wal") > 0
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# The writer lock


class _WriterLock:
    """An exclusive flock on `<db>.lock`, held by the one process that writes the database."""

    def __init__(self, db: Path):
        self.path = db.with_name(db.name + ".lock")
        self.fd: int | None = None

    def acquire(self, db: Path) -> None:
        if fcntl is None:  # pragma: no cover
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"{db}: cannot create the writer lock {self.path.name} ({_cause(exc)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = "this process" if holder == str(os.getpid()) else "another normfuzz process"
                raise StoreError(
                    f"{db}: is being written by {who} (pid {holder}, holding {self.path.name}); "
                    f"wait for it to finish or stop it"
                ) from None
            raise StoreError(f"{db}: cannot lock {self.path.name} ({_cause(exc)})") from None
        self.fd = fd
        with contextlib.suppress(OSError):  # the pid is informative only (a full disk must not stop us here)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _writer_alive(db: Path) -> bool:
    """True when some process holds the writer lock of `db` (a running campaign)."""
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(db.with_name(db.name + ".lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# The store


class Store:
    """A campaign's findings database. Make one with `Store.create` or `Store.open`, not directly.

    Use it as a context manager, or call `close()`. See the module docstring for the schema, what is
    written when, and the durability guarantees.
    """

    def __init__(self, db: Path, conn: sqlite3.Connection, *, readonly: bool, timeout: float,
                 lock: _WriterLock | None):
        self.path = db
        self.readonly = readonly
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = conn
        self._lock = lock
        self._campaign_id: str = ""
        self._pending_counts: dict[tuple[str, ...], int] = {}
        self._pending_unsupported: dict[tuple[str, ...], int] = {}
        self._session_start: float | None = None  # monotonic clock; set while this process runs the campaign
        self._session_base = 0.0

    # ---- making and opening

    @classmethod
    def create(cls, path: str | os.PathLike, campaign: Mapping[str, Any], *, timeout: float = 5.0,
               synchronous: str = "NORMAL") -> Store:
        """Create the database for a new campaign and return it open for writing.

        `path`: the campaign folder (created if missing; the database is `findings.sqlite` in it) or
        a file path ending in .sqlite/.sqlite3/.db. `campaign`: a mapping with `config` (dict:
        ops, runners, dtypes, regimes, budget, ... as JSON-serializable values) and optionally
        `seed` (int), `frameworks` (runner -> version), `platform` (default `platform_info()`) and
        `id` (default: UTC start time plus random hex). `timeout`: seconds to wait for a lock held
        by another connection. `synchronous`: "NORMAL" or "FULL" (see the module docstring).

        The file is built under a temporary name and renamed into place, so a database at the final
        path is always complete. Raises `StoreError` if a database already exists there (open it to
        resume), another process holds the folder's writer lock, or the folder cannot be written;
        `ValueError`/`TypeError` for a malformed `campaign`.
        """
        db = database_path(path)
        row = _campaign_row(campaign)
        sync = _synchronous(synchronous)
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{db.parent}: cannot create the campaign folder ({_cause(exc)})") from None
        lock = _WriterLock(db)
        lock.acquire(db)
        try:
            if db.exists() or os.path.exists(f"{db}-wal"):
                raise StoreError(
                    f"{db}: a findings database already exists; open it to resume its campaign "
                    f"(Store.open) or choose another folder"
                )
            # Holding the lock, no other create runs here: temporary files are a killed create's.
            for stale in db.parent.glob(f".{db.name}.*.tmp*"):
                with contextlib.suppress(OSError):
                    stale.unlink()
            _build_database(db, row)
            store = cls._connect(db, readonly=False, timeout=timeout, synchronous=sync, lock=lock)
        except BaseException:
            lock.release()
            raise
        store._session_start, store._session_base = time.monotonic(), 0.0
        return store

    @classmethod
    def open(cls, path: str | os.PathLike, *, readonly: bool = False, timeout: float = 5.0,
             synchronous: str = "NORMAL", joined: bool = False) -> Store:
        """Open an existing database (`path`: its campaign folder or the file).

        Refuses with `StoreError`, without modifying the file: a missing file, a file that is not
        SQLite, a SQLite file of another application, a schema version newer than this normfuzz
        reads (`VERSION`), and a database missing its tables. A writer (readonly=False) also takes
        the folder's writer lock: a second writing process is refused with the holder's pid.
        readonly=True never writes the database (SQLite may create its -wal/-shm side files when
        the folder is writable); in a read-only folder with no pending log it reads the file as is.
        joined=True opens a writer *without* the lock, for a job process of a campaign whose parent
        process holds it (`--jobs`): SQLite serializes the jobs' transactions, each of which is
        atomic (a finding and its bucket, a job's checkpoint), and the jobs die with the parent.
        """
        db = database_path(path)
        if not db.exists():
            raise StoreError(f"{db}: no findings database here (Store.create makes one)")
        version = _check_header(db)
        if not _wal_has_content(db):
            _check_version(db, version)  # the header is authoritative: refuse without asking SQLite
        elif not readonly:
            # Committed transactions wait in the log: validate through a read-only connection first,
            # because closing a refused read-write connection could fold the log into the file.
            cls._connect(db, readonly=True, timeout=timeout, synchronous="NORMAL", lock=None)._close_now()
        sync = _synchronous(synchronous)
        lock = None
        if not readonly and not joined:
            lock = _WriterLock(db)
            lock.acquire(db)
        try:
            return cls._connect(db, readonly=readonly, timeout=timeout, synchronous=sync, lock=lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def _connect(cls, db: Path, *, readonly: bool, timeout: float, synchronous: str,
                 lock: _WriterLock | None) -> Store:
        uri = db.resolve().as_uri() + ("?mode=ro" if readonly else "?mode=rw")
        conn = None
        try:
            try:
                conn = _sqlite_connect(uri, timeout)
                conn.execute("PRAGMA foreign_keys = ON")
                if readonly:
                    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
                else:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise StoreError(f"{db}: cannot switch the database to WAL mode (SQLite says {mode!r})")
                    conn.execute(f"PRAGMA synchronous = {synchronous}")
            except sqlite3.OperationalError as exc:
                # A read-only folder: no -shm can be made (CANTOPEN). With no log to replay, the file
                # alone is the database: read it as is.
                cantopen = getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY"))
                if not (readonly and cantopen) or _wal_has_content(db):
                    raise
                if conn is not None:
                    conn.close()
                conn = _sqlite_connect(uri + "&immutable=1", timeout)
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            store = cls(db, conn, readonly=readonly, timeout=timeout, lock=lock)
            store._validate()
            return store
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"{db}: cannot open the findings database: {_cause(exc, timeout)}") from None
        except UnicodeDecodeError:  # SQLite's own message quotes damaged bytes of the schema
            if conn is not None:
                conn.close()
            raise StoreError(f"{db}: cannot open the findings database: the database is corrupt (its schema "
                             f"holds text that is not UTF-8; PRAGMA integrity_check says where)") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    def _validate(self) -> None:
        """Check user_version, the meta rows and the tables; remember the campaign id."""
        conn = self._conn
        assert conn is not None
        db = self.path
        _check_version(db, conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        missing = [t for t in _TABLE_NAMES if t not in tables]
        if missing:
            raise StoreError(f"{db}: is not a complete normfuzz findings database (missing tables {missing})")
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        if meta.get("schema") != SCHEMA or meta.get("version") != str(VERSION):
            raise StoreError(
                f"{db}: meta says schema {meta.get('schema')!r} version {meta.get('version')!r}; "
                f"expected {SCHEMA!r} version {VERSION}"
            )
        ids = [r[0] for r in conn.execute("SELECT id FROM campaign")]
        if len(ids) != 1:
            raise StoreError(f"{db}: holds {len(ids)} campaign rows; a findings database holds exactly one")
        self._campaign_id = ids[0]

    # ---- closing

    def close(self) -> None:
        """Write pending counters (a writer), release the writer lock and close. Idempotent."""
        if self._conn is None:
            return
        try:
            if not self.readonly:
                self.flush()
        finally:
            self._close_now()

    def _close_now(self) -> None:
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                conn.close()  # the last connection checkpoints the log into the database
        except sqlite3.Error:
            pass
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            # Unwinding (an error, an interrupt): counters not covered by a checkpoint are dropped,
            # so that a resumed campaign counts those cases exactly once.
            self._close_now()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("read-only" if self.readonly else "writer")
        return f"<Store {self.path} {state}>"

    # ---- transactions

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed on success, rolled back on any error.

        BEGIN is inside the guarded block: a Ctrl-C that arrives while BEGIN waits for another
        process's write lock is raised as soon as BEGIN returns, with the transaction open (CPython
        checks signals when a call returns). Left open, it would hold the write lock, so that every
        later write of this store fails ("cannot start a transaction within a transaction") and every
        other process times out on the lock: an interrupted --jobs campaign then ended without its
        conclusion (tests/fuzz/test_store.py)."""
        conn = self._require(action, write=True)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: cannot {action}: {_cause(exc, self.timeout)}") from None
            raise

    def _require(self, action: str, *, write: bool = False) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: cannot {action}: the store is closed")
        if write and self.readonly:
            raise StoreError(f"{self.path}: cannot {action}: the store was opened read-only")
        return self._conn

    def _rows(self, action: str, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        conn = self._require(action)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot {action}: {_cause(exc, self.timeout)}") from None
        except UnicodeDecodeError as exc:  # a damaged page can hold text that is not UTF-8
            raise StoreError(f"{self.path}: cannot {action}: the database is corrupt (stored text is not "
                             f"UTF-8: {exc}; PRAGMA integrity_check says where)") from None

    # ---- writing: findings

    def record_finding(self, case: Case, outcome: Outcome, finding: Any = None, verdict: Any = None, *,
                       category: str | None = None, signature: str | None = None,
                       explanation: str | None = None, max_ratio: float | None = None,
                       details: Mapping[str, Any] | None = None, worst_output: str | None = None,
                       worst_index: Sequence[int] | None = None, nan_mismatches: int | None = None,
                       regime: str | None = None, known_issue: str | None = None) -> Recorded:
        """Store one triaged finding and update its bucket, committed before returning.

        The finding's fields come from the keywords, or else from `finding` (an object with the
        attributes category, signature, explanation, max_ratio, details, regime, such as
        `fuzz.triage.Finding`; its runner, case_id, op, mode and dtype, where present, must agree
        with the outcome and case) and `verdict` (an object with worst_output, max_ratio, checks of
        `OutputCheck`s with name, worst_index and pattern_mismatches, and `to_dict()`, such as
        `fuzz.compare.Verdict`; stored whole as JSON). category and signature are required.

        In one transaction: the case (if not stored yet), the outcome with its verdict fields
        (max_ratio, worst_output, worst_index, nan_mismatches), the finding, and the bucket
        (`bucket_key(case.op, case.mode, outcome.runner, category, signature, case.dtype)`), created
        with count 0 if new, then count + 1 and last_seen. A new bucket's status is new, or known
        when `known_issue` (a link or text from triage) is given; a fixed bucket seen again becomes
        recurring. explanation and details (a JSON-serializable mapping) are stored with the
        finding and never enter the key.

        A second call for the same (case, runner) in this campaign (a case re-run after a kill) writes
        nothing and returns the first finding's id and bucket, with is_new_bucket False.
        """
        return self.record_findings([(case, outcome, finding, verdict, {
            "category": category, "signature": signature, "explanation": explanation, "max_ratio": max_ratio,
            "details": details, "worst_output": worst_output, "worst_index": worst_index,
            "nan_mismatches": nan_mismatches, "regime": regime, "known_issue": known_issue})])[0]

    def record_findings(self, items: Iterable[tuple]) -> list[Recorded]:
        """`record_finding` for several findings in one transaction (one write lock, one commit:
        a campaign stores a family's findings at once). `items`: tuples (case, outcome, finding,
        verdict) or (case, outcome, finding, verdict, keywords), the keywords those of
        `record_finding`. Every item is checked before anything is written: one invalid item
        raises and stores none of them. Returns one `Recorded` per item, in order."""
        rows = []
        for item in items:
            case, outcome, finding, verdict, *kw = item
            rows.append(self._finding_rows(case, outcome, finding, verdict, **(kw[0] if kw else {})))
        if not rows:
            return []
        out = []
        with self._write("record a finding") as conn:
            for key, known, category, signature, case, outcome, regime, explanation, ratio, details_json, \
                    case_row, outcome_row in rows:
                found = conn.execute(_FIND_FINDING, (self._campaign_id, case.id, outcome.runner)).fetchone()
                if found is not None:
                    out.append(Recorded(int(found[0]), found[1], False))
                    continue
                now = _now()
                conn.execute(_INSERT_CASE, case_row)
                conn.execute(_INSERT_OUTCOME, outcome_row)
                is_new = conn.execute(_INSERT_BUCKET, (
                    key, case.op, case.mode, outcome.runner, case.dtype, category, signature,
                    "known" if known else "new", known, now, now,
                )).rowcount == 1
                finding_id = conn.execute(_INSERT_FINDING, (
                    self._campaign_id, case.id, outcome.runner, case.op, case.mode, case.dtype, regime, category,
                    signature, explanation, ratio, details_json, key, now,
                )).lastrowid
                conn.execute(_COUNT_FINDING, (now, known, known, key))
                out.append(Recorded(int(finding_id), key, is_new))
        return out

    def _finding_rows(self, case: Case, outcome: Outcome, finding: Any = None, verdict: Any = None, *,
                      category: str | None = None, signature: str | None = None,
                      explanation: str | None = None, max_ratio: float | None = None,
                      details: Mapping[str, Any] | None = None, worst_output: str | None = None,
                      worst_index: Sequence[int] | None = None, nan_mismatches: int | None = None,
                      regime: str | None = None, known_issue: str | None = None) -> tuple:
        """`record_finding`'s checks, and the values its transaction writes."""
        if not isinstance(case, Case):
            raise TypeError(f"case is a {type(case).__name__}; expected a fuzz.case.Case")
        if not isinstance(outcome, Outcome):
            raise TypeError(f"outcome is a {type(outcome).__name__}; expected a fuzz.outcome.Outcome")
        if outcome.case_id != case.id:
            raise ValueError(f"outcome.case_id={outcome.case_id!r} is not the case's id {case.id!r}")
        expected = {"runner": outcome.runner, "case_id": case.id, "op": case.op, "mode": case.mode,
                    "dtype": case.dtype}
        for what, record in (("finding", finding), ("verdict", verdict)):
            for attr, want in expected.items():
                got = getattr(record, attr, want) if record is not None else want
                if got != want:
                    source = "outcome" if attr == "runner" else "case"
                    raise ValueError(f"{what}.{attr}={got!r} does not match the {source} ({want!r})")
        pick = lambda value, attr, *records: value if value is not None else next(  # noqa: E731
            (getattr(r, attr) for r in records if r is not None and getattr(r, attr, None) is not None), None)
        category = pick(category, "category", finding)
        signature = pick(signature, "signature", finding)
        if category is None or signature is None:
            raise ValueError("record_finding needs a category and a signature (as keywords, or a finding)")
        key = bucket_key(case.op, case.mode, outcome.runner, category, signature, case.dtype)
        ratio = _ratio(pick(max_ratio, "max_ratio", finding, verdict), "max_ratio")
        details_json = _dumps(dict(pick(details, "details", finding) or {}), "details")
        regime = pick(regime, "regime", finding) or None
        regime = None if regime is None else _name(regime, "regime")
        known = None if known_issue is None else _name(known_issue, "known_issue")
        explanation = _text(pick(explanation, "explanation", finding), "explanation")
        worst_output = pick(worst_output, "worst_output", verdict) or None
        checks = list(getattr(verdict, "checks", None) or ())
        if worst_index is None and worst_output is not None:
            worst_index = next((c.worst_index for c in checks if getattr(c, "name", None) == worst_output), None)
        if nan_mismatches is None and checks:
            nan_mismatches = sum(int(getattr(c, "pattern_mismatches", 0)) for c in checks)
        index_json = None if worst_index is None else _dumps([int(i) for i in worst_index], "worst_index")
        nan_count = None if nan_mismatches is None else _count(nan_mismatches, "nan_mismatches")
        verdict_json = _dumps(verdict.to_dict(), "verdict") if hasattr(verdict, "to_dict") else None
        worst_output = None if worst_output is None else _text(worst_output, "worst_output", limit=1000)
        case_row = self._case_row(case, regime)
        outcome_row = (
            case.id, outcome.runner, outcome.status, _text(outcome.error_type, "error_type", limit=1000),
            _text(outcome.error, "error"), _text(outcome.detail, "detail"), float(outcome.seconds),
            outcome.exit_code, outcome.signal, ratio, worst_output, index_json, nan_count, verdict_json,
        )

        return (key, known, category, signature, case, outcome, regime, explanation, ratio, details_json,
                case_row, outcome_row)

    def set_minimal(self, key: str, case: Case, ratio: float | None = None, explanation: str | None = None, *,
                    regime: str | None = None, outputs: Mapping[str, Any] | None = None) -> None:
        """Record `case` (stored in full) as bucket `key`'s minimal reproducer, with its error ratio
        and explanation; replaces any earlier one. Without ratio and explanation, those of the
        case's own finding in the bucket are used (if it has one). `outputs`: the bucket runner's
        output arrays for this case (`Outcome.outputs`; name -> numeric array), stored in the
        outputs table unless empty or over `MAX_OUTPUT_BYTES` in total. StoreError if the bucket
        does not exist; ValueError if the case's op, mode or dtype is not the bucket's, or an
        output is not a numeric array."""
        if not isinstance(case, Case):
            raise TypeError(f"case is a {type(case).__name__}; expected a fuzz.case.Case")
        fields = parse_bucket_key(key)
        if (case.op, case.mode, case.dtype) != (fields["op"], fields["mode"], fields["dtype"]):
            raise ValueError(
                f"minimal case is {case.op}/{case.mode} {case.dtype}; bucket {key!r} is "
                f"{fields['op']}/{fields['mode']} {fields['dtype']}"
            )
        npz = _outputs_npz(outputs) if outputs else None
        row = self._case_row(case, None if regime is None else _name(regime, "regime"))
        from_finding = ratio is None and explanation is None
        ratio = _ratio(ratio, "ratio")
        explanation = _text(explanation, "explanation")
        with self._write("set a minimal reproducer") as conn:
            if from_finding:
                own = conn.execute("SELECT max_ratio, explanation FROM findings WHERE bucket_key = ? AND case_id = ? "
                                   "ORDER BY id LIMIT 1", (key, case.id)).fetchone()
                if own is not None:
                    ratio, explanation = own
            conn.execute(_INSERT_CASE, row)
            updated = conn.execute(
                "UPDATE buckets SET min_case_id = ?, min_ratio = ?, min_explanation = ?, min_summary = ? "
                "WHERE key = ?", (case.id, ratio, explanation, case.summary(), key)).rowcount
            if updated != 1:
                raise StoreError(f"{self.path}: cannot set a minimal reproducer: no bucket {key!r}")
            if npz is not None:
                conn.execute("INSERT OR REPLACE INTO outputs (case_id, runner, npz) VALUES (?, ?, ?)",
                             (case.id, fields["runner"], npz))

    def add_baseline_bucket(self, bucket: Mapping[str, Any], status: str = "fixed", case: Case | None = None) -> bool:
        """Add a bucket of a previous campaign (a dict from its `buckets()`) with count 0 and `status`
        (fixed: not seen in this campaign). Its known issue, first/last seen and minimal-reproducer
        fields are kept; pass its minimal case (the baseline's `case(bucket["min_case_id"])`) to
        store it here too, else min_case_id stays empty. Returns False, writing nothing, when this
        campaign already has the bucket."""
        if status not in BUCKET_STATUSES:
            raise ValueError(f"status={status!r}: expected one of {BUCKET_STATUSES}")
        fields = {f: bucket.get(f) for f in BUCKET_FIELDS}
        key = bucket_key(**fields)
        if bucket.get("key", key) != key:
            raise ValueError(f"bucket key {bucket.get('key')!r} does not match its fields (key {key!r})")
        case_row = None
        if case is not None:
            if not isinstance(case, Case) or case.id != bucket.get("min_case_id"):
                raise ValueError(f"case {getattr(case, 'id', case)!r} is not the bucket's minimal case "
                                 f"{bucket.get('min_case_id')!r}")
            case_row = self._case_row(case, None)
        now = _now()
        with self._write("add a baseline bucket") as conn:
            if case_row is not None:
                conn.execute(_INSERT_CASE, case_row)
            return conn.execute(
                "INSERT INTO buckets (key, op, mode, runner, dtype, category, signature, status, known_issue, "
                "count, first_seen, last_seen, min_case_id, min_ratio, min_explanation, min_summary) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, fields["op"], fields["mode"], fields["runner"], fields["dtype"], fields["category"],
                 fields["signature"], status, bucket.get("known_issue"), bucket.get("first_seen") or now,
                 bucket.get("last_seen") or now, None if case_row is None else case.id,
                 _ratio(bucket.get("min_ratio"), "min_ratio"), bucket.get("min_explanation"),
                 bucket.get("min_summary"))).rowcount == 1

    def set_bucket_status(self, key: str, status: str, known_issue: str | None = None) -> None:
        """Set a bucket's status (new, known, recurring, fixed) and, if given, its known issue.
        StoreError if the bucket does not exist."""
        if status not in BUCKET_STATUSES:
            raise ValueError(f"status={status!r}: expected one of {BUCKET_STATUSES}")
        known = None if known_issue is None else _name(known_issue, "known_issue")
        with self._write("set a bucket status") as conn:
            updated = conn.execute(
                "UPDATE buckets SET status = ?, known_issue = COALESCE(?, known_issue) WHERE key = ?",
                (status, known, key)).rowcount
            if updated != 1:
                raise StoreError(f"{self.path}: cannot set a bucket status: no bucket {key!r}")

    def _case_row(self, case: Case, regime: str | None) -> tuple:
        return (case.id, case.op, case.mode, case.dtype, regime, case.summary(), case.to_json())

    # ---- writing: counters, progress, campaign

    def add_counts(self, items: Iterable[tuple[Any, int]] | Mapping[Any, int]) -> None:
        """Add per-combination counts (in memory; written by the next checkpoint/flush/finish/close).

        `items`: (combo, n) pairs, or a mapping combo -> n (a `collections.Counter`). A combo is a
        tuple (op, mode, runner, dtype, regime, result) or a mapping with those keys; result is an
        outcome status or a verdict category, regime may be None (stored as '').
        """
        self._require("add counts", write=True)
        pairs = items.items() if isinstance(items, Mapping) else items
        staged: dict[tuple[str, ...], int] = {}
        for combo, n in pairs:
            combo = _combo(combo, COUNT_FIELDS, optional=("regime",))
            staged[combo] = staged.get(combo, 0) + _count(n, "count")
        pending = self._pending_counts
        for combo, n in staged.items():  # all validated first: a bad item adds nothing
            pending[combo] = pending.get(combo, 0) + n

    def add_unsupported(self, items: Iterable[tuple[Any, int]] | Mapping[Any, int]) -> None:
        """Count cases a runner could not express, like `add_counts`: (combo, n) pairs or a mapping,
        a combo being (runner, op, mode, dtype, reason) or a mapping with those keys. The reason is
        cut to 1,000 characters; give a stable reason (no values that change per case)."""
        self._require("add unsupported counts", write=True)
        pairs = items.items() if isinstance(items, Mapping) else items
        staged: dict[tuple[str, ...], int] = {}
        for combo, n in pairs:
            combo = _combo(combo, UNSUPPORTED_FIELDS, optional=("reason",))
            combo = (*combo[:4], _text(combo[4], "reason", limit=1000))
            staged[combo] = staged.get(combo, 0) + _count(n, "count")
        pending = self._pending_unsupported
        for combo, n in staged.items():
            pending[combo] = pending.get(combo, 0) + n

    def set_versions(self, frameworks: Mapping[str, str]) -> None:
        """Add or update framework versions (runner -> version) in the campaign row."""
        _check_versions(frameworks)
        with self._write("set framework versions") as conn:
            row = conn.execute("SELECT frameworks FROM campaign WHERE id = ?", (self._campaign_id,)).fetchone()
            merged = {**_loads(row[0]), **dict(frameworks)}
            conn.execute("UPDATE campaign SET frameworks = ? WHERE id = ?",
                         (_dumps(merged, "frameworks"), self._campaign_id))

    def flush(self) -> None:
        """Write the pending counters now, in one transaction."""
        if not (self._pending_counts or self._pending_unsupported):
            self._require("write counts", write=True)
            return
        with self._write("write counts") as conn:
            self._write_pending(conn)
        self._pending_counts.clear()
        self._pending_unsupported.clear()

    def _write_pending(self, conn: sqlite3.Connection) -> None:
        if self._pending_counts:
            conn.executemany(_ADD_COUNT, ((*combo, n) for combo, n in self._pending_counts.items()))
        if self._pending_unsupported:
            conn.executemany(_ADD_UNSUPPORTED, ((*combo, n) for combo, n in self._pending_unsupported.items()))

    def checkpoint(self, state: Mapping[str, Any], *, cases_run: int | None = None) -> None:
        """Save the campaign's resume state (any JSON-serializable mapping: round, cases done, ...)
        together with the pending counters, `cases_run` (total so far, if given) and the active
        seconds, in one transaction; the progress row is replaced atomically."""
        state_json = _dumps(dict(state), "checkpoint state")
        cases = None if cases_run is None else _count(cases_run, "cases_run")
        with self._write("save a checkpoint") as conn:
            self._write_pending(conn)
            conn.execute("INSERT OR REPLACE INTO progress (id, state, updated_at) VALUES (1, ?, ?)",
                         (state_json, _now()))
            self._update_clock(conn, cases)
        self._pending_counts.clear()
        self._pending_unsupported.clear()

    def checkpoint_job(self, job: int | None, state: Mapping[str, Any] | None = None,
                       totals: Mapping[str, Any] | None = None) -> None:
        """Save job `job`'s resume state under `jobs` in the progress row (read, updated and written
        in one transaction, so concurrent jobs never lose each other's state), with the pending
        counters; `totals` (JSON-serializable) are merged at the top level of the state (the
        parent's cases and elapsed; job None writes only those). Leaves the campaign's clock and
        cases_run to the parent."""
        state_json = _dumps(dict(state or {}), "checkpoint state")
        _dumps(dict(totals or {}), "checkpoint totals")
        with self._write("save a job checkpoint") as conn:
            self._write_pending(conn)
            row = conn.execute("SELECT state FROM progress WHERE id = 1").fetchone()
            full = _loads(row[0]) if row else {}
            full = full if isinstance(full, dict) else {}
            jobs = full.get("jobs") if isinstance(full.get("jobs"), dict) else {}
            if job is not None:
                jobs[str(int(job))] = json.loads(state_json)
            full.update(dict(totals or {}))
            full["jobs"] = jobs
            conn.execute("INSERT OR REPLACE INTO progress (id, state, updated_at) VALUES (1, ?, ?)",
                         (_dumps(full, "checkpoint state"), _now()))
        self._pending_counts.clear()
        self._pending_unsupported.clear()

    def _update_clock(self, conn: sqlite3.Connection, cases_run: int | None) -> None:
        if cases_run is not None:
            conn.execute("UPDATE campaign SET cases_run = ? WHERE id = ?", (cases_run, self._campaign_id))
        if self._session_start is not None:
            seconds = self._session_base + (time.monotonic() - self._session_start)
            conn.execute("UPDATE campaign SET seconds = ? WHERE id = ?", (seconds, self._campaign_id))

    def resume(self) -> dict[str, Any] | None:
        """Mark the campaign running again (resumes + 1, finished_at cleared) and return the state of
        its last checkpoint (None if it never checkpointed). The active-time clock continues from
        the last checkpoint's seconds."""
        with self._write("resume the campaign") as conn:
            conn.execute("UPDATE campaign SET status = 'running', finished_at = NULL, resumes = resumes + 1 "
                         "WHERE id = ?", (self._campaign_id,))
            base = conn.execute("SELECT seconds FROM campaign WHERE id = ?", (self._campaign_id,)).fetchone()[0]
        self._session_start, self._session_base = time.monotonic(), float(base)
        return self.progress()

    def finish(self, status: str = "finished", info: Mapping[str, Any] | None = None, *,
               cases_run: int | None = None) -> None:
        """Write pending counters, set the campaign's status (finished, interrupted, failed),
        finished_at, cases_run (if given) and seconds, merge `info` (JSON-serializable: unavailable
        runners, warnings, ...) into the campaign's extra, then fold the log into the database file."""
        if status not in CAMPAIGN_STATUSES or status == "running":
            raise ValueError(f"status={status!r}: expected one of {[s for s in CAMPAIGN_STATUSES if s != 'running']}")
        cases = None if cases_run is None else _count(cases_run, "cases_run")
        info = dict(info or {})
        _dumps(info, "finish info")
        with self._write("finish the campaign") as conn:
            self._write_pending(conn)
            extra = _loads(conn.execute("SELECT extra FROM campaign WHERE id = ?", (self._campaign_id,)).fetchone()[0])
            conn.execute("UPDATE campaign SET status = ?, finished_at = ?, extra = ? WHERE id = ?",
                         (status, _now(), _dumps({**extra, **info}, "finish info"), self._campaign_id))
            self._update_clock(conn, cases)
        self._pending_counts.clear()
        self._pending_unsupported.clear()
        self._session_start = None
        with contextlib.suppress(sqlite3.Error):  # best effort; close() checkpoints again
            self._require("checkpoint the log").execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # ---- reading

    def campaign(self) -> dict[str, Any]:
        """The campaign row: id, config, seed, platform, frameworks, extra, started_at, finished_at,
        status, resumes, cases_run, seconds. A campaign stored as running whose process is gone
        (nobody holds the writer lock) reads as interrupted."""
        rows = self._rows("read the campaign",
                          "SELECT id, config, seed, platform, frameworks, extra, started_at, finished_at, "
                          "status, resumes, cases_run, seconds FROM campaign")
        r = rows[0]
        status = r[8]
        if status == "running":
            # Stored 'running' is true only while a process runs the campaign: this store (created or
            # resumed here), or another process holding the writer lock.
            if self._lock is not None:
                running = self._session_start is not None
            else:
                running = _writer_alive(self.path)
            status = "running" if running else "interrupted"
        return {
            "id": r[0], "config": _loads(r[1]), "seed": None if r[2] is None else int(r[2]),
            "platform": _loads(r[3]), "frameworks": _loads(r[4]), "extra": _loads(r[5]),
            "started_at": r[6], "finished_at": r[7], "status": status, "resumes": r[9],
            "cases_run": r[10], "seconds": r[11],
        }

    def progress(self) -> dict[str, Any] | None:
        """The state saved by the last `checkpoint()`, or None."""
        rows = self._rows("read the checkpoint", "SELECT state FROM progress WHERE id = 1")
        return _loads(rows[0][0]) if rows else None

    def buckets(self, status: str | None = None) -> list[dict[str, Any]]:
        """All buckets (or those with `status`), most findings first, then by key."""
        if status is not None and status not in BUCKET_STATUSES:
            raise ValueError(f"status={status!r}: expected one of {BUCKET_STATUSES} or None")
        sql = f"SELECT {', '.join(_BUCKET_COLUMNS)} FROM buckets"
        params: tuple = ()
        if status is not None:
            sql, params = sql + " WHERE status = ?", (status,)
        rows = self._rows("read buckets", sql + " ORDER BY count DESC, key", params)
        return [dict(zip(_BUCKET_COLUMNS, r)) for r in rows]

    def bucket(self, key: str) -> dict[str, Any] | None:
        """One bucket by key, or None."""
        rows = self._rows("read a bucket", f"SELECT {', '.join(_BUCKET_COLUMNS)} FROM buckets WHERE key = ?", (key,))
        return dict(zip(_BUCKET_COLUMNS, rows[0])) if rows else None

    def finding_count(self) -> int:
        """How many findings are stored (`summary()["findings"]` without its per-category scan of
        the findings table: counted on the bucket index, for progress polled twice a second)."""
        return int(self._rows("count findings", "SELECT count(*) FROM findings")[0][0])

    def bucket_keys(self) -> list[str]:
        """Every bucket key, sorted."""
        return [r[0] for r in self._rows("read bucket keys", "SELECT key FROM buckets ORDER BY key")]

    def findings(self, bucket_key: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Findings in recording order (all, or those of one bucket), at most `limit`; details decoded."""
        sql = f"SELECT {', '.join(_FINDING_COLUMNS)} FROM findings"
        params: list[Any] = []
        if bucket_key is not None:
            sql += " WHERE bucket_key = ?"
            params.append(bucket_key)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(_count(limit, "limit"))
        out = []
        for r in self._rows("read findings", sql, params):
            d = dict(zip(_FINDING_COLUMNS, r))
            d["details"] = _loads(d["details"])
            out.append(d)
        return out

    def outcomes(self, case_id: str) -> list[dict[str, Any]]:
        """The stored outcomes of one case (one per runner with a finding), worst_index decoded."""
        rows = self._rows("read outcomes", f"SELECT {', '.join(_OUTCOME_COLUMNS)} FROM outcomes WHERE case_id = ? "
                          "ORDER BY runner", (case_id,))
        out = []
        for r in rows:
            d = dict(zip(_OUTCOME_COLUMNS, r))
            d["worst_index"] = _loads(d["worst_index"])
            d["verdict"] = _loads(d["verdict"])
            out.append(d)
        return out

    def case(self, case_id: str) -> Case:
        """The stored case with this id. KeyError if it is not stored (only cases with a finding and
        minimal reproducers are); StoreError if its stored JSON does not load."""
        row = self._case_row_by_id(case_id)
        if row is None:
            raise KeyError(f"case {case_id!r} is not stored in {self.path} (only cases with a finding "
                           f"and minimal reproducers are)")
        try:
            return Case.from_json(row[6])
        except CaseFormatError as exc:
            raise StoreError(f"{self.path}: stored case {case_id!r} does not load: {exc}") from None

    def outputs(self, case_id: str, runner: str) -> dict[str, np.ndarray] | None:
        """The stored output arrays of `runner` on case `case_id` (a bucket's minimal reproducer,
        see `set_minimal`), or None when none are stored. StoreError if the stored bytes do not load."""
        rows = self._rows("read outputs", "SELECT npz FROM outputs WHERE case_id = ? AND runner = ?",
                          (case_id, runner))
        if not rows:
            return None
        import io
        import zipfile

        try:
            with np.load(io.BytesIO(rows[0][0]), allow_pickle=False) as z:
                return {name: z[name] for name in z.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise StoreError(f"{self.path}: stored outputs of case {case_id!r} on {runner!r} do not load: "
                             f"{exc}") from None

    def _case_row_by_id(self, case_id: str) -> tuple | None:
        rows = self._rows("read a case", "SELECT id, op, mode, dtype, regime, summary, case_json FROM cases "
                          "WHERE id = ?", (case_id,))
        return tuple(rows[0]) if rows else None

    def counts(self) -> list[dict[str, Any]]:
        """The per-combination counters written so far, sorted by combination."""
        cols = (*COUNT_FIELDS, "count")
        rows = self._rows("read counts", f"SELECT {', '.join(cols)} FROM counts ORDER BY {', '.join(COUNT_FIELDS)}")
        return [dict(zip(cols, r)) for r in rows]

    def unsupported(self) -> list[dict[str, Any]]:
        """The unsupported counters written so far, sorted."""
        cols = (*UNSUPPORTED_FIELDS, "count")
        rows = self._rows("read unsupported counts",
                          f"SELECT {', '.join(cols)} FROM unsupported ORDER BY {', '.join(UNSUPPORTED_FIELDS)}")
        return [dict(zip(cols, r)) for r in rows]

    def summary(self) -> dict[str, Any]:
        """Totals: cases run, active seconds, cases per second, run results (from the counters),
        findings per category, buckets per status, unsupported cases."""
        c = self.campaign()
        results = dict(self._rows("summarize", "SELECT result, sum(count) FROM counts GROUP BY result ORDER BY result"))
        by_category = dict(self._rows("summarize",
                                      "SELECT category, count(*) FROM findings GROUP BY category ORDER BY category"))
        by_status = dict(self._rows("summarize", "SELECT status, count(*) FROM buckets GROUP BY status"))
        unsupported = self._rows("summarize", "SELECT coalesce(sum(count), 0) FROM unsupported")[0][0]
        seconds = float(c["seconds"])
        extra = c["extra"] if isinstance(c["extra"], dict) else {}
        startup = extra.get("startup_seconds")
        return {
            "campaign_id": c["id"],
            "status": c["status"],
            "cases_run": c["cases_run"],
            "seconds": seconds,
            "cases_per_second": c["cases_run"] / seconds if seconds > 0 else None,
            "startup_seconds": float(startup) if isinstance(startup, (int, float)) else None,
            "jobs": int(extra.get("jobs", 1)) if isinstance(extra.get("jobs", 1), int) else 1,
            # Hypothesis examples this run of the campaign evaluated (families of one signature)
            "families": extra["families"] if isinstance(extra.get("families"), int) else None,
            # data elements of the cases this run ran (elements / cases_run: the mean case size)
            "elements": extra["elements"] if isinstance(extra.get("elements"), int) else None,
            # round -> [fuzzing seconds, cases, complete] of the rounds this run ran (`Campaign._timed_round`)
            "rounds": extra["rounds"] if isinstance(extra.get("rounds"), dict) else None,
            "results": results,
            "findings": sum(by_category.values()),
            "findings_by_category": by_category,
            "buckets": sum(by_status.values()),
            "buckets_by_status": {s: int(by_status.get(s, 0)) for s in BUCKET_STATUSES},
            "unsupported": int(unsupported),
        }

    def export_summary_json(self, path: str | os.PathLike | None = None) -> Path:
        """Write the machine-readable summary (default: `summary.json` beside the database) and
        return its path. Strict JSON (non-finite floats as "nan"/"inf"/"-inf"), written to a
        temporary file and renamed. Contents: schema, version, database (file name), campaign,
        totals (`summary()`), and every bucket (key, the six fields, status, count, first_seen,
        last_seen, known_issue, min_case_id, min_ratio, min_summary)."""
        target = Path(path) if path is not None else self.path.with_name(SUMMARY_NAME)
        keep = ("key", *BUCKET_FIELDS, "status", "count", "first_seen", "last_seen", "known_issue",
                "min_case_id", "min_ratio", "min_summary")
        doc = {
            "schema": SUMMARY_SCHEMA,
            "version": 1,
            "database": self.path.name,
            "campaign": self.campaign(),
            "totals": self.summary(),
            "buckets": [{k: b[k] for k in keep} for b in self.buckets()],
        }
        text = json.dumps(_strict_json(doc), indent=1, sort_keys=True, allow_nan=False) + "\n"
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"{target}: cannot write the summary ({_cause(exc)})") from None
        return target


# --------------------------------------------------------------------------------------------------
# Helpers for create/open


def _sqlite_connect(uri: str, timeout: float) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; every write goes through Store._write.
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)


def _synchronous(value: str) -> str:
    if value not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous={value!r}: expected 'NORMAL' or 'FULL'")
    return value


def _combo(combo: Any, names: tuple[str, ...], optional: tuple[str, ...] = ()) -> tuple[str, ...]:
    if isinstance(combo, Mapping):
        if set(combo) != set(names):
            raise ValueError(f"combination has keys {sorted(combo)}; expected {list(names)}")
        combo = tuple(combo[n] for n in names)
    if not isinstance(combo, tuple) or len(combo) != len(names):
        raise ValueError(f"combination {combo!r}: expected a tuple {names} or a mapping with those keys")
    out = []
    for name, value in zip(names, combo):
        if value is None and name in optional:
            value = ""
        if not isinstance(value, str) or (not value and name not in optional):
            raise ValueError(f"combination field {name}={value!r}: expected a non-empty str")
        out.append(value)
    return tuple(out)


_CAMPAIGN_KEYS = ("id", "config", "seed", "platform", "frameworks")


def _campaign_row(campaign: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(campaign, Mapping):
        raise TypeError(f"campaign is a {type(campaign).__name__}; expected a mapping")
    if "config" not in campaign:
        raise ValueError(f"campaign has keys {sorted(campaign)}; expected 'config' and optionally "
                         f"{[k for k in _CAMPAIGN_KEYS if k != 'config']} (any others are kept as extra)")
    config = campaign["config"]
    if not isinstance(config, Mapping):
        raise TypeError(f"campaign config is a {type(config).__name__}; expected a mapping")
    seed = campaign.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"campaign seed={seed!r}: expected an int or None")
    frameworks = campaign.get("frameworks") or {}
    _check_versions(frameworks)
    plat = campaign.get("platform")
    plat = platform_info() if plat is None else plat
    if not isinstance(plat, Mapping):
        raise TypeError(f"campaign platform is a {type(plat).__name__}; expected a mapping")
    extra = {k: v for k, v in campaign.items() if k not in _CAMPAIGN_KEYS}
    if not all(isinstance(k, str) for k in extra):
        raise TypeError(f"campaign keys must be str; got {sorted(map(repr, extra))}")
    started = _now()
    cid = campaign.get("id")
    if cid is None:
        cid = started[:19].replace("-", "").replace(":", "") + "Z-" + secrets.token_hex(3)
    cid = _name(cid, "campaign id")
    return {
        "id": cid, "config": _dumps(dict(config), "campaign config"),
        "seed": None if seed is None else str(int(seed)), "platform": _dumps(dict(plat), "campaign platform"),
        "frameworks": _dumps(dict(frameworks), "campaign frameworks"), "extra": _dumps(extra, "campaign extra"),
        "started_at": started,
    }


def _check_versions(frameworks: Any) -> None:
    if not isinstance(frameworks, Mapping) or not all(isinstance(k, str) for k in frameworks):
        raise TypeError(f"frameworks={frameworks!r}: expected a mapping runner -> version")


def _build_database(db: Path, row: Mapping[str, Any]) -> None:
    """Write a complete new database to a temporary file beside `db`, then rename it to `db`."""
    tmp = db.with_name(f".{db.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {VERSION}")
            for sql in _TABLES:
                conn.execute(sql)
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                ("schema", SCHEMA), ("version", str(VERSION)), ("created_at", row["started_at"]),
                ("created_by", "normfuzz " + platform_info()["normfuzz"]),
            ])
            conn.execute(
                "INSERT INTO campaign (id, config, seed, platform, frameworks, extra, started_at, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'running')",
                (row["id"], row["config"], row["seed"], row["platform"], row["frameworks"], row["extra"],
                 row["started_at"]))
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.replace(tmp, db)
        with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
            dir_fd = os.open(db.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except (sqlite3.Error, OSError) as exc:
        for leftover in (tmp, Path(f"{tmp}-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise StoreError(f"{db}: cannot create the findings database: {_cause(exc)}") from None
