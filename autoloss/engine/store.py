"""The persistent store of one search run: one SQLite file per run.

Every candidate and every gate verdict is committed the moment it is written (the connection is in
autocommit mode, the journal is WAL with ``synchronous=FULL``), so a run killed at any moment, even
with SIGKILL, resumes with nothing lost::

    with RunStore("runs/r1/run.sqlite") as store:
        store.save_config(config)
        cid = store.add_candidate(0, 0, "add(x, y)", origin="random")
        if store.find_evaluation("add(x, y)", "train") is None:
            store.add_verdict(cid, "train", True, "", {"fitness": 0.41}, seconds=812.0)

The engine is generic: genotypes are opaque strings. Stored JSON (the config, candidate parents,
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

STATUSES = ("ok", "failed", "timeout", "crashed", "error")

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
_VERDICT_COLUMNS = "v.candidate_id, v.gate, v.passed, v.reason, v.metrics, v.status, v.seconds, v.created"


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
    status: str  # "ok" | "failed" | "timeout" | "crashed" | "error"
    seconds: float
    created: float


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


def _candidate(row: tuple) -> CandidateRow:
    cid, generation, index, genotype, parents, origin, fingerprint, created = row
    return CandidateRow(cid, generation, index, genotype, json.loads(parents), origin, fingerprint, created)


def _verdict(row: tuple) -> VerdictRow:
    cid, gate, passed, reason, metrics, status, seconds, created = row
    return VerdictRow(cid, gate, bool(passed), reason, json.loads(metrics), status, seconds, created)


class RunStore:
    """The SQLite file of one search run; every write is committed before the method returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # autocommit
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

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
        text = _dumps(config)
        row = self._one("SELECT value FROM config WHERE id = 1")
        if row is None:
            self._db.execute("INSERT INTO config (id, value) VALUES (1, ?)", (text,))
        elif row[0] != text:
            key = _first_difference(json.loads(row[0]), json.loads(text))
            raise ValueError(f"config differs from the one stored in {self.path} at key {key!r}")

    def load_config(self) -> dict | None:
        row = self._one("SELECT value FROM config WHERE id = 1")
        return None if row is None else json.loads(row[0])

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
            raise ValueError(
                f"candidate ({generation}, {index}) is stored as {row[1]!r}, not {genotype!r}:"
                " a resumed run must regenerate the same population"
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
    ) -> None:
        """Record a candidate's verdict for a gate, replacing any earlier one for the same gate."""
        if status not in STATUSES:
            raise ValueError(f"unknown verdict status {status!r}; expected one of {', '.join(STATUSES)}")
        self._db.execute(
            "INSERT OR REPLACE INTO verdicts (candidate_id, gate, passed, reason, metrics, status, seconds, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (candidate_id, gate, int(bool(passed)), reason, _dumps(metrics or {}), status, float(seconds), time.time()),
        )

    def verdict(self, candidate_id: int, gate: str) -> VerdictRow | None:
        row = self._one(
            f"SELECT {_VERDICT_COLUMNS} FROM verdicts v WHERE v.candidate_id = ? AND v.gate = ?", (candidate_id, gate)
        )
        return None if row is None else _verdict(row)

    def verdicts(self, generation: int | None = None, gate: str | None = None) -> list[VerdictRow]:
        """Verdicts, optionally of one generation and/or one gate, in candidate order then write order."""
        rows = self._db.execute(
            f"SELECT {_VERDICT_COLUMNS} FROM verdicts v JOIN candidates c ON c.id = v.candidate_id"
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
            f"SELECT {_VERDICT_COLUMNS} FROM verdicts v JOIN candidates c ON c.id = v.candidate_id"
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
        return None if row is None else json.loads(row[0])

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
            f"SELECT {_CANDIDATE_COLUMNS}, {_VERDICT_COLUMNS} FROM verdicts v"
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
