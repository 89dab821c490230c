"""The persistent store of one search run: one SQLite file per run.

Every candidate and every gate verdict is committed the moment it is written (the connection is in
autocommit mode, the journal is WAL), so a run killed at any moment, even with SIGKILL, resumes with
nothing lost. ``synchronous=NORMAL``: a commit is in the WAL file when the write returns, which
survives the death of the process; only an operating-system crash or a power cut can lose the last
few commits (never corrupt the store), and the search is not slowed by an fsync per verdict::

    with RunStore("runs/r1/run.sqlite") as store:
        store.save_config(config)
        cid = store.add_candidate(0, 0, "add(x, y)", origin="random")
        if store.find_evaluation("add(x, y)", "train") is None:
            store.add_verdict(cid, "train", True, "", {"fitness": 0.41}, seconds=812.0)

The engine is generic: genotypes are opaque strings (the representation's identity keys); the run's
config names the representation kind and the metric, so readers know how to read them.

The schema is versioned (SQLite ``user_version``): a store written by a newer or unknown schema is
refused with one clear line, an older one is migrated in place when a search resumes it. Stored JSON (the config, candidate parents,
verdict metrics, generation summaries and state values) is written with ``sort_keys=True``; float
NaN and infinities are not valid JSON, so they are stored as ``null`` and read back as ``None``
(a NaN fitness is therefore never ranked by :meth:`RunStore.best`).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoloss.errors import UserError

STATUSES = ("ok", "failed", "timeout", "crashed", "oom", "error", "diverged")
# Failures that may not happen again (retried on resume, up to a limit) and those that will.
TRANSIENT = ("timeout", "crashed", "oom")
DETERMINISTIC = ("failed", "error", "diverged")
BASELINE_GENERATION = -1  # the generation number of the baseline, evaluated before the search
REFERENCE_GENERATION = -2  # the breeding origin, when a strategy compares with it and it is not the baseline
SCHEMA_VERSION = 2  # 0: before versioning (no attempts column); 1 never existed; 2: attempts


class StoreError(UserError):
    """A file that is not a usable run store (damaged, foreign, or of an unknown schema)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS config (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    genotype TEXT NOT NULL,
    parents TEXT NOT NULL,
    origin TEXT NOT NULL,
    fingerprint TEXT,
    created REAL NOT NULL,
    UNIQUE (generation, idx)
);
CREATE INDEX IF NOT EXISTS candidates_genotype ON candidates (genotype);
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY,
    candidate_id INTEGER NOT NULL REFERENCES candidates (id),
    gate TEXT NOT NULL,
    passed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    metrics TEXT NOT NULL,
    status TEXT NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    UNIQUE (candidate_id, gate)
);
CREATE INDEX IF NOT EXISTS verdicts_gate ON verdicts (gate);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    summary TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
# The UNIQUE constraints create the indexes on (generation, idx) and (candidate_id, gate).

TABLES = {"config", "candidates", "verdicts", "generations", "state"}
_CANDIDATE_COLUMNS = "c.id, c.generation, c.idx, c.genotype, c.parents, c.origin, c.fingerprint, c.created"
_VERDICT_COLUMNS = ("v.candidate_id, v.gate, v.passed, v.reason, v.metrics, v.status, v.seconds, v.created,"
                    " v.attempts")


@dataclass(frozen=True)
class CandidateRow:
    """One member of one generation's population."""

    id: int
    generation: int
    index: int
    genotype: str
    parents: list[str]
    origin: str
    fingerprint: str | None
    created: float


@dataclass(frozen=True)
class VerdictRow:
    """The outcome of one gate for one candidate; a failed evaluation is a verdict with passed=False."""

    candidate_id: int
    gate: str
    passed: bool
    reason: str
    metrics: dict
    status: str  # one of STATUSES
    seconds: float
    created: float
    attempts: int = 1  # how many times the evaluation ran (transient failures are retried on resume)

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT


def _clean(value: Any) -> Any:
    """Return ``value`` as plain JSON data, with NaN and infinite floats replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_clean(value), sort_keys=True, allow_nan=False)


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    """The dotted path of the first key (in sorted order) where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new or old[key] != new[key]:
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    return path or "<root>"


RUN_DIR_MARK = "${run}"  # a stored path inside the run directory starts with it (see RunStore.save_config)


def _relative(value: Any, root: str) -> Any:
    """``value`` with every string that is a path inside ``root`` written from RUN_DIR_MARK instead."""
    if isinstance(value, str) and (value == root or value.startswith(root.rstrip(os.sep) + os.sep)):
        return RUN_DIR_MARK + value[len(root):]
    if isinstance(value, dict):
        return {key: _relative(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative(item, root) for item in value]
    return value


def _resolved(value: Any, root: str) -> Any:
    """The inverse of :func:`_relative`: paths from RUN_DIR_MARK made absolute under ``root``."""
    if isinstance(value, str) and value.startswith(RUN_DIR_MARK):
        return root + value[len(RUN_DIR_MARK):]
    if isinstance(value, dict):
        return {key: _resolved(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolved(item, root) for item in value]
    return value


def _read_only_media(folder: Path) -> bool:
    """Whether ``folder`` is on a read-only file system (``os.access`` says writable to root there)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def config_difference(stored: dict, config: dict) -> str | None:
    """Where ``config`` differs from a stored run config (the first key, dotted), or None when equal."""
    if _dumps(stored) == _dumps(config):
        return None
    return _first_difference(stored, json.loads(_dumps(config)))


# Metrics every reader takes as numbers (fitness) or whole numbers (the rest), when a verdict has them
# (checked by the run reader, :func:`check_metrics`).
NUMBER_METRICS = ("fitness",)
INTEGER_METRICS = ("seed", "epoch", "iters", "skips")


def _candidate(row: tuple) -> CandidateRow:
    """A candidates row, every field checked (a StoreError naming it for a tampered one)."""
    cid, generation, index, genotype, parents, origin, fingerprint, created = row
    where = f"candidate {cid!r}"
    parents = _loads(parents, list)
    if not all(isinstance(p, str) for p in parents):
        raise StoreError(f"{where}: its parents are not a list of genotypes (tampered)")
    return CandidateRow(_integer(cid, "id", "candidate"), _integer(generation, "generation", where),
                        _integer(index, "idx", where), _text(genotype, "genotype", where), parents,
                        _text(origin, "origin", where), None if fingerprint is None else _text(fingerprint, "fingerprint", where),
                        _number(created, "created", where))


def _verdict(row: tuple) -> VerdictRow:
    """A verdicts row, every field checked (a StoreError naming it for a tampered one)."""
    cid, gate, passed, reason, metrics, status, seconds, created, attempts = row
    where = f"the verdict of candidate {cid!r} at {str(gate)[:40]!r}"
    if passed not in (0, 1) or isinstance(passed, float):
        raise StoreError(f"{where}: 'passed' is {str(passed)[:40]!r}, not 0 or 1 (tampered)")
    if status not in STATUSES:
        raise StoreError(f"{where}: status {str(status)[:40]!r} is not one of {', '.join(STATUSES)} (tampered)")
    metrics = _loads(metrics, dict)
    seconds = _number(seconds, "seconds", where)
    if seconds < 0:
        raise StoreError(f"{where}: 'seconds' is negative ({seconds}) (tampered)")
    attempts = _integer(attempts, "attempts", where)
    if attempts < 1:
        raise StoreError(f"{where}: 'attempts' is {attempts}, not a positive count (tampered)")
    return VerdictRow(_integer(cid, "candidate_id", "a verdict"), _text(gate, "gate", where), bool(passed),
                      _text(reason, "reason", where), metrics, status, seconds, _number(created, "created", where),
                      attempts)


def check_metrics(metrics: dict, where: str) -> dict:
    """The metrics every reader takes as numbers, checked to be numbers (the run reader's rule; the live
    store keeps what it is given, and ranks only numbers)."""
    for key in NUMBER_METRICS:
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise StoreError(f"{where}: metric {key!r} is {str(value)[:40]!r}, not a number (tampered)")
    for key in INTEGER_METRICS:
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise StoreError(f"{where}: metric {key!r} is {str(value)[:40]!r}, not a whole number (tampered)")
    return metrics


def _finite(value: Any, where: str) -> None:
    """Refuse the NaN and infinities JSON text may spell (``Infinity``, ``NaN``): the store never writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise StoreError(f"{where} holds a non-finite number ({value}) (tampered)")
    if isinstance(value, dict):
        for item in value.values():
            _finite(item, where)
    elif isinstance(value, list):
        for item in value:
            _finite(item, where)


def _integer(value: Any, column: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"{where}: {column!r} is {str(value)[:40]!r}, not a whole number (tampered)")
    return value


def _number(value: Any, column: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StoreError(f"{where}: {column!r} is {str(value)[:40]!r}, not a finite number (tampered)")
    return float(value)


def _text(value: Any, column: str, where: str) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{where}: {column!r} is {str(value)[:40]!r}, not text (tampered)")
    return value


def _loads(text: str, kind: type = object) -> Any:
    """Stored JSON of the expected kind, its numbers finite; a StoreError (not a traceback) for a tampered row."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise StoreError(f"a stored value is not JSON: {str(text)[:60]!r}") from None
    if not isinstance(value, kind):
        raise StoreError(f"a stored value is not a JSON {kind.__name__}: {str(text)[:60]!r}")
    _finite(value, "a stored value")
    return value


class RunStore:
    """The SQLite file of one search run; every write is committed before the method returns."""

    def __init__(self, path: str | Path, readonly: bool = False, create: bool = True):
        """Open (and, unless ``readonly``, create or migrate) the store at ``path``.

        Every problem with the file is a :class:`StoreError` naming it: not an SQLite database, a
        damaged one, a database without the run tables, a schema this version does not know.
        """
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                self._db = self._connect_readonly()
            else:
                if not create and not self.path.is_file():
                    raise StoreError(f"{self.path} does not exist")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # autocommit
            self._open()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise StoreError(f"{self.path} is not a run store (not a readable SQLite database: {exc})") from None
        except StoreError:
            self._close_quietly()
            raise

    def _connect_readonly(self) -> sqlite3.Connection:
        """A read-only connection (``mode=ro``). A store on read-only media (a finished run on a DVD, a
        read-only mount) cannot get the WAL index SQLite makes beside it: when there is no WAL file to
        read, it is opened as ``immutable=1`` instead (nothing can change it there); when there is one,
        the error says so."""
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA quick_check(1)").fetchone()
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if "unable to open" not in str(exc):
                raise
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError(f"cannot read {self.path}: its folder is read-only and its write-ahead log {wal.name} "
                                 "holds commits not yet folded into it; copy the run folder to writable storage "
                                 "and read it there") from None
            if os.access(self.path.parent, os.W_OK) and not _read_only_media(self.path.parent):
                raise
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=30.0, isolation_level=None)

    def _open(self) -> None:
        (quick,) = self._db.execute("PRAGMA quick_check(1)").fetchone()  # damaged pages show here
        if quick != "ok":
            raise StoreError(f"{self.path} is damaged (SQLite integrity check: {quick})")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version > SCHEMA_VERSION or (version and version != SCHEMA_VERSION):
            raise StoreError(f"{self.path} was written by a newer or unknown autoloss (store schema {version}; "
                             f"this version reads schemas up to {SCHEMA_VERSION}): upgrade autoloss to read it")
        if tables and not {"config", "candidates", "verdicts"} <= tables:
            raise StoreError(f"{self.path} is not a run store (an SQLite database without the run tables)")
        missing = sorted(TABLES - tables)
        if version == SCHEMA_VERSION and missing:  # every table is created with the schema: one went missing
            raise StoreError(f"{self.path} is damaged or tampered: the run store has no table {', '.join(missing)}")
        if self.readonly:
            if not tables:
                raise StoreError(f"{self.path} is empty: not a run store")
            self._legacy = version == 0
            return
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        if tables and version == 0:
            self._migrate_from_0()
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._legacy = False

    def _migrate_from_0(self) -> None:
        """Stores written before versioning: verdicts gain their attempt count (1 each)."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(verdicts)")}
        if "attempts" not in columns:
            self._db.execute("ALTER TABLE verdicts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    @property
    def _verdict_columns(self) -> str:
        return _VERDICT_COLUMNS.replace("v.attempts", "1") if self._legacy else _VERDICT_COLUMNS

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _one(self, sql: str, args: tuple = ()) -> tuple | None:
        return self._db.execute(sql, args).fetchone()

    # -- run config -------------------------------------------------------------------------------

    def save_config(self, config: dict) -> None:
        """Store the run's config once; the same config again is a no-op, a different one a ValueError.

        Paths inside the run directory (a tracker search's data and baseline, a detector search's work
        folder) are stored relative to it (``${run}/data``) and read back resolved where the store is now
        (:meth:`load_config`), so a run folder that was moved or copied still resumes; a store written
        with absolute paths reads as it was written."""
        stored = self.load_config()
        if stored is None:
            self._db.execute("INSERT INTO config (id, value) VALUES (1, ?)",
                             (_dumps(_relative(config, self._run_dir)),))
        elif (key := config_difference(stored, config)) is not None:
            raise ValueError(f"config differs from the one stored in {self.path} at key {key!r}")

    def load_config(self) -> dict | None:
        row = self._one("SELECT value FROM config WHERE id = 1")
        return None if row is None else _resolved(_loads(row[0], dict), self._run_dir)

    @property
    def _run_dir(self) -> str:
        return str(self.path.parent.resolve())

    # -- candidates -------------------------------------------------------------------------------

    def add_candidate(
        self,
        generation: int,
        index: int,
        genotype: str,
        parents: list[str] = (),
        origin: str = "",
        fingerprint: str | None = None,
    ) -> int:
        """Add a candidate and return its id; idempotent on (generation, index).

        If the slot already holds the same genotype its id is returned (and nothing else is changed);
        a different genotype raises ValueError, since a resumed run must regenerate the same population.
        """
        row = self._one("SELECT id, genotype FROM candidates WHERE generation = ? AND idx = ?", (generation, index))
        if row is None:
            cur = self._db.execute(
                "INSERT INTO candidates (generation, idx, genotype, parents, origin, fingerprint, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (generation, index, genotype, _dumps(list(parents)), origin, fingerprint, time.time()),
            )
            return cur.lastrowid
        if row[1] != genotype:
            raise StoreError(
                f"{self.path}: candidate ({generation}, {index}) is stored as {row[1][:80]!r}, but this search "
                f"makes {genotype[:80]!r}: the store was written by another search or altered; not resumed"
            )
        return row[0]

    def set_fingerprint(self, candidate_id: int, fingerprint: str) -> None:
        cur = self._db.execute("UPDATE candidates SET fingerprint = ? WHERE id = ?", (fingerprint, candidate_id))
        if cur.rowcount == 0:
            raise KeyError(f"no candidate with id {candidate_id}")

    def candidates(self, generation: int | None = None) -> list[CandidateRow]:
        """All candidates, or one generation's, ordered by generation and index."""
        rows = self._db.execute(
            f"SELECT {_CANDIDATE_COLUMNS} FROM candidates c WHERE ?1 IS NULL OR c.generation = ?1"
            " ORDER BY c.generation, c.idx",
            (generation,),
        )
        return [_candidate(r) for r in rows]

    def candidate(self, candidate_id: int) -> CandidateRow:
        row = self._one(f"SELECT {_CANDIDATE_COLUMNS} FROM candidates c WHERE c.id = ?", (candidate_id,))
        if row is None:
            raise KeyError(f"no candidate with id {candidate_id}")
        return _candidate(row)

    # -- verdicts ---------------------------------------------------------------------------------

    def add_verdict(
        self,
        candidate_id: int,
        gate: str,
        passed: bool,
        reason: str,
        metrics: dict | None = None,
        status: str = "ok",
        seconds: float = 0.0,
        attempts: int = 1,
    ) -> None:
        """Record a candidate's verdict for a gate, replacing any earlier one for the same gate."""
        if status not in STATUSES:
            raise ValueError(f"unknown verdict status {status!r}; expected one of {', '.join(STATUSES)}")
        self._db.execute(
            "INSERT OR REPLACE INTO verdicts (candidate_id, gate, passed, reason, metrics, status, seconds, created,"
            " attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (candidate_id, gate, int(bool(passed)), reason, _dumps(metrics or {}), status, float(seconds), time.time(),
             int(attempts)),
        )

    def verdict(self, candidate_id: int, gate: str) -> VerdictRow | None:
        row = self._one(
            f"SELECT {self._verdict_columns} FROM verdicts v WHERE v.candidate_id = ? AND v.gate = ?", (candidate_id, gate)
        )
        return None if row is None else _verdict(row)

    def verdicts(self, generation: int | None = None, gate: str | None = None) -> list[VerdictRow]:
        """Verdicts, optionally of one generation and/or one gate, in candidate order then write order."""
        rows = self._db.execute(
            f"SELECT {self._verdict_columns} FROM verdicts v JOIN candidates c ON c.id = v.candidate_id"
            " WHERE (?1 IS NULL OR c.generation = ?1) AND (?2 IS NULL OR v.gate = ?2)"
            " ORDER BY c.generation, c.idx, v.id",
            (generation, gate),
        )
        return [_verdict(r) for r in rows]

    def find_evaluation(self, genotype: str, gate: str) -> VerdictRow | None:
        """The newest verdict of ``gate`` for any candidate with this genotype (whatever its status).

        "Newest" is write order: a replaced verdict gets a new row id above every other.
        """
        row = self._one(
            f"SELECT {self._verdict_columns} FROM verdicts v JOIN candidates c ON c.id = v.candidate_id"
            " WHERE c.genotype = ? AND v.gate = ? ORDER BY v.id DESC LIMIT 1",
            (genotype, gate),
        )
        return None if row is None else _verdict(row)

    # -- generations ------------------------------------------------------------------------------

    def finish_generation(self, generation: int, summary: dict) -> None:
        """Mark a generation finished with its summary (replacing any earlier one)."""
        self._db.execute(
            "INSERT OR REPLACE INTO generations (generation, summary, created) VALUES (?, ?, ?)",
            (generation, _dumps(summary), time.time()),
        )

    def generation_summary(self, generation: int) -> dict | None:
        row = self._one("SELECT summary FROM generations WHERE generation = ?", (generation,))
        return None if row is None else _loads(row[0], dict)

    def finished_generations(self) -> list[int]:
        return [_integer(r[0], "generation", "a generation summary")
                for r in self._db.execute("SELECT generation FROM generations ORDER BY generation")]

    def funnel(self, generation: int) -> dict[str, dict[str, int]]:
        """gate -> {"in", "passed", "failed"} counts over the generation's verdicts, gates in first-use order."""
        rows = self._db.execute(
            "SELECT v.gate, COUNT(*), SUM(v.passed) FROM verdicts v JOIN candidates c ON c.id = v.candidate_id"
            " WHERE c.generation = ? GROUP BY v.gate ORDER BY MIN(v.id)",
            (generation,),
        )
        return {gate: {"in": n, "passed": ok, "failed": n - ok} for gate, n, ok in rows}

    # -- the hall of fame -------------------------------------------------------------------------

    def best(self, gate: str, n: int = 10, metric: str = "fitness") -> list[tuple[CandidateRow, VerdictRow]]:
        """The top ``n`` distinct genotypes by ``metrics[metric]`` (descending) among ok verdicts of ``gate``.

        Verdicts whose metric is missing, None or not a number are skipped; ties go to the lower
        candidate id, and each genotype appears once, with its best verdict.
        """
        rows = self._db.execute(
            f"SELECT {_CANDIDATE_COLUMNS}, {self._verdict_columns} FROM verdicts v"
            " JOIN candidates c ON c.id = v.candidate_id WHERE v.gate = ? AND v.status = 'ok'",
            (gate,),
        )
        scored = []
        for row in rows:
            cand, verd = _candidate(row[:8]), _verdict(row[8:])
            value = verd.metrics.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scored.append((-value, cand.id, cand, verd))
        scored.sort(key=lambda s: (s[0], s[1]))
        top: list[tuple[CandidateRow, VerdictRow]] = []
        seen: set[str] = set()
        for _, _, cand, verd in scored:
            if cand.genotype not in seen and len(top) < n:
                seen.add(cand.genotype)
                top.append((cand, verd))
        return top

    # -- engine state -----------------------------------------------------------------------------

    def set_state(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, _dumps(value)))

    def get_state(self, key: str, default: Any = None) -> Any:
        row = self._one("SELECT value FROM state WHERE key = ?", (key,))
        if row is None:
            return default
        try:
            return _loads(row[0])
        except StoreError as exc:
            raise StoreError(f"{self.path}: engine state {str(key)[:40]!r}: {exc}") from None

    def states(self) -> dict[str, Any]:
        """Every engine state value, by key, each checked to be JSON (what a resume reads)."""
        return {key: self.get_state(key) for (key,) in self._db.execute("SELECT key FROM state ORDER BY key")}

    def generations_summaries(self) -> dict[int, dict]:
        """Every finished generation's summary, by generation."""
        rows = self._db.execute("SELECT generation, summary FROM generations ORDER BY generation")
        return {_integer(g, "generation", "a generation summary"): _loads(text, dict) for g, text in rows}
