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


def config_difference(stored: dict, config: dict) -> str | None:
    """Where ``config`` differs from a stored run config (the first key, dotted), or None when equal."""
    if _dumps(stored) == _dumps(config):
        return None
    return _first_difference(stored, json.loads(_dumps(config)))


def _candidate(row: tuple) -> CandidateRow:
    cid, generation, index, genotype, parents, origin, fingerprint, created = row
    return CandidateRow(cid, generation, index, genotype, _loads(parents, list), origin, fingerprint, created)


def _verdict(row: tuple) -> VerdictRow:
    cid, gate, passed, reason, metrics, status, seconds, created, attempts = row
    return VerdictRow(cid, gate, bool(passed), reason, _loads(metrics, dict), status, seconds, created, attempts)


def _loads(text: str, kind: type) -> Any:
    """Stored JSON of the expected kind; a StoreError (not a traceback) for a tampered row."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise StoreError(f"a stored value is not JSON: {str(text)[:60]!r}") from None
    if not isinstance(value, kind):
        raise StoreError(f"a stored value is not a JSON {kind.__name__}: {str(text)[:60]!r}")
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
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                                           isolation_level=None)
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
        """Store the run's config once; the same config again is a no-op, a different one a ValueError."""
        stored = self.load_config()
        if stored is None:
            self._db.execute("INSERT INTO config (id, value) VALUES (1, ?)", (_dumps(config),))
        elif (key := config_difference(stored, config)) is not None:
            raise ValueError(f"config differs from the one stored in {self.path} at key {key!r}")

    def load_config(self) -> dict | None:
        row = self._one("SELECT value FROM config WHERE id = 1")
        return None if row is None else _loads(row[0], dict)

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
        return [r[0] for r in self._db.execute("SELECT generation FROM generations ORDER BY generation")]

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
        return default if row is None else json.loads(row[0])

    def generations_summaries(self) -> dict[int, dict]:
        """Every finished generation's summary, by generation."""
        rows = self._db.execute("SELECT generation, summary FROM generations ORDER BY generation")
        return {g: _loads(text, dict) for g, text in rows}
