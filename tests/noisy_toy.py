"""A noisy toy: the bit strings of :mod:`toy`, whose fitness is a known true value plus Gaussian noise.

The true value of a genotype is the share of ones among its first ``USED`` bits, times ``scale``,
plus ``offset`` (``scale = 0``: every candidate is as good as the baseline); every evaluation adds
noise of standard deviation ``sd``, drawn from (genotype, stage, seed), so a seed's result is
reproducible and two seeds differ. The searches run in-process (:class:`InlineExecutor`), so a
hundred of them take seconds: what :mod:`test_confirmation` and ``scripts/benchmark_confirmation.py``
measure.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import toy  # noqa: E402
from autoloss.engine.confirmation import ConfirmSettings  # noqa: E402
from autoloss.engine.executors import run_job  # noqa: E402
from autoloss.engine.schedulers import run_search  # noqa: E402
from autoloss.engine.store import RunStore  # noqa: E402
from autoloss.engine.study import Problem  # noqa: E402
from autoloss.strategies.evolution import EvolutionOptions, EvolutionStrategy  # noqa: E402
from autoloss.timelimit import Outcome  # noqa: E402

USED = toy.USED


def true_value(task: dict, genotype: str) -> float:
    return task.get("offset", 0.0) + task.get("scale", 1.0) * genotype[:USED].count("1") / USED


def noisy(task: dict, genotype: str, stage: str, seed: int) -> dict:
    """The true value plus Gaussian noise of sd ``task['sd']``, reproducible per (genotype, stage, seed)."""
    digest = hashlib.sha256(repr((genotype, stage, seed, task.get("salt", 0))).encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return {"fitness": true_value(task, genotype) + rng.gauss(0.0, task.get("sd", 0.05))}


class InlineExecutor:
    """Runs every job at once in this process (the executor protocol, without workers)."""

    name = "inline"

    def stream(self, items, timeout, fn=run_job, on_wait=None, poll=None):
        for index, item in enumerate(items):
            started = time.perf_counter()
            try:
                value = fn(item)
            except Exception as exc:  # noqa: BLE001  (recorded as the evaluation's failure)
                yield index, item, Outcome("error", error=f"{type(exc).__name__}: {exc}",
                                           seconds=time.perf_counter() - started)
                continue
            yield index, item, Outcome("ok", value, seconds=time.perf_counter() - started)

    def close(self) -> None:
        pass


class Plain(EvolutionStrategy):
    """Evolution with the ranking stage only (the toy's validity gate first)."""

    name = "noisy-plain"

    def cheap_gates(self, gates):
        return []


def problem(sd: float = 0.05, scale: float = 1.0, offset: float = 0.0, salt: int = 0, evaluate=noisy) -> Problem:
    return Problem(representation=toy.Bits(), operators=toy.BitOperators(), evaluate=evaluate,
                   task={"sd": sd, "scale": scale, "offset": offset, "salt": salt}, metric="ones",
                   timeouts={"proxy": 60.0})


def search(path: Path, seed: int, sd: float = 0.05, scale: float = 1.0, population: int = 6, generations: int = 2,
           confirmation: ConfirmSettings | None = ConfirmSettings(), baseline_seeds: int = 3, mode="generational",
           executor=None):
    """One seeded search of the noisy toy into ``path/run.sqlite``: (result, store)."""
    store = RunStore(Path(path) / "run.sqlite")
    strategy = Plain(EvolutionOptions(population=population, generations=generations, parents=2))
    result = run_search(problem(sd, scale, salt=seed), strategy, store, executor or InlineExecutor(), seed=seed,
                        mode=mode, baseline_seeds=baseline_seeds, confirmation=confirmation)
    return result, store


def evaluated_truth(store, task: dict) -> dict[int, float]:
    """The true value of every searched candidate that has a ranking result: candidate id -> value."""
    ids = {v.candidate_id for v in store.verdicts(gate="proxy") if v.status == "ok"}
    return {cid: true_value(task, store.candidate(cid).genotype) for cid in ids if store.candidate(cid).generation >= 0}


def rates(runs: int = 100, sd: float = 0.05, **options) -> dict:
    """Over ``runs`` seeded searches: how often the single-shot winner and the confirmed winner are
    truly best among the evaluated candidates, and how often a candidate as good as the baseline is
    called better (a flat toy: every true value is the baseline's)."""
    single = confirmed = 0
    nulls = null_better = null_runs = 0
    with tempfile.TemporaryDirectory(dir=_fast_dir()) as tmp:
        for seed in range(runs):
            result, store = search(Path(tmp) / f"a{seed}", seed, sd, **options)
            truth = evaluated_truth(store, {"scale": 1.0})
            best = max(truth.values())
            single_id = max((v.candidate_id for v in store.verdicts(gate="proxy")
                             if store.candidate(v.candidate_id).generation >= 0),
                            key=lambda cid: (store.verdict(cid, "proxy").metrics["fitness"], -cid))
            single += truth[single_id] == best
            winner = result.confirmation["winner"] if result.confirmation else single_id
            confirmed += winner is not None and truth[winner] == best
            store.close()
            result, store = search(Path(tmp) / f"b{seed}", seed, sd, scale=0.0, **options)
            rows = result.confirmation["candidates"] if result.confirmation else []
            nulls += len(rows)
            called = sum(row["verdict"] == "better" for row in rows)
            null_better += called
            null_runs += called > 0
            store.close()
    return {"runs": runs, "sd": sd, "single_shot_right": single / runs, "confirmed_right": confirmed / runs,
            "null_called_better": null_better / max(nulls, 1), "null_runs_with_a_claim": null_runs / runs}


def _fast_dir() -> str | None:
    """A memory-backed folder for the many small stores (SQLite's syncs cost nothing there), if any."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def tabled(task: dict, genotype: str, stage: str, seed: int) -> dict:
    """A hand-set true value per genotype (``task['table']``, else 0) plus noise; counts its calls."""
    CALLS.append((genotype, seed))
    if KILL_AFTER and len(CALLS) > KILL_AFTER[0]:
        raise Killed(f"killed after {KILL_AFTER[0]} evaluations")
    digest = hashlib.sha256(repr((genotype, stage, seed)).encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return {"fitness": task.get("table", {}).get(genotype, 0.0) + rng.gauss(0.0, task.get("sd", 0.01))}


CALLS: list = []
KILL_AFTER: list = []  # [n]: the evaluation after the n-th raises Killed (in-process SIGKILL)


class Killed(BaseException):
    """A stand-in for SIGKILL inside the in-process executor: nothing after it runs."""
