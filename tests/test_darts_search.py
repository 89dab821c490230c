"""The differentiable strategies (darts, darts2, ms-darts) on the tracking proxy, end to end through the engine:
per-epoch derived genotypes in the store with the papers' measures, early-stopping choice, the chosen cells on
the ranking stage, a SIGKILLed search resumed to the same alphas, and the report's per-epoch figures.

``python tests/test_darts_search.py OUT DATA --strategy S [--epochs E] [--seeds N]`` runs one tiny search into
``OUT`` (what the SIGKILL test kills).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

from autoloss.engine.store import RunStore  # noqa: E402

HERE = Path(__file__).resolve()
EDGES, OPERATIONS = 14, 8


def tiny_settings():
    from autoloss.tracking.train import TrackingSettings

    return TrackingSettings(channels=8, crop_size=64, baseline_steps=3, baseline_batch=1, steps=4, batch=2, pool=2,
                            track_iterations=3, init_shifts=1, threads=1, sequence_frames=8, frame_size=64,
                            holdout_sequences=2)


def tiny_data(root: Path) -> Path:
    """Two weight and two hold-out sequences, and the baseline trained for 3 steps (re-used when present)."""
    from autoloss.tracking.synthetic import generate_split
    from autoloss.tracking.train import train_baseline

    generate_split(root, "weights", sequences=2, frames=8, size=64)
    generate_split(root, "holdout", sequences=2, frames=6, size=64)
    return train_baseline(tiny_settings(), root, root / "baseline.pt")


def executor(workers: int = 2):
    """Forked workers (they inherit the imports: no start-up cost in a test; the CLI spawns)."""
    from autoloss.engine.executors import LocalExecutor
    import autoloss.differentiable.worker  # noqa: F401
    import autoloss.tracking.supernet_model  # noqa: F401

    return LocalExecutor(workers=workers, context="fork")


def run_search(out: Path, data: Path, strategy: str, epochs: int = 2, seeds: int = 2, workers: int = 2,
               pool=None, **extra):
    """A tiny search with ``strategy`` into ``out/run.sqlite`` (resumed when the store exists)."""
    import autoloss.plugins  # noqa: F401  (registers the built-in strategies)
    from autoloss.engine.registry import strategy as strategy_class
    from autoloss.engine.study import Study
    from autoloss.tracking.problem import tracking_problem

    baseline = tiny_data(data)
    problem = tracking_problem("dimp_small", tiny_settings(), data, baseline)
    cls = strategy_class(strategy)
    options = {"epochs": epochs, "seeds": seeds, "warmup": 0.0, "patience": None, "holdout_batches": 2,
               "eigenvalue_iterations": 4, **extra}
    chosen = cls(cls.Options(**options))
    store = RunStore(out / "run.sqlite")
    workers_ = pool or executor(workers)
    try:
        study = Study(problem, chosen, store, workers_, seed=0, scheduler=chosen.scheduler.name)
        return chosen.scheduler().run(study, chosen), store
    finally:
        if pool is None:
            workers_.close()


def derived(store) -> dict[tuple[int, int], object]:
    """(epoch, seed) -> the derived verdict."""
    return {(store.candidate(v.candidate_id).generation, store.candidate(v.candidate_id).index): v
            for v in store.verdicts(gate="derived")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("darts-data")
    tiny_data(root)
    return root


@pytest.fixture(scope="module")
def workers():
    pool = executor(2)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data, workers):
    """One tiny search (2 seeds, 2 epochs) per strategy: strategy -> (run dir, result)."""
    root = tmp_path_factory.mktemp("darts-runs")
    done = {}
    for strategy in ("darts", "darts2", "ms-darts"):
        result, store = run_search(root / strategy, data, strategy, epochs=2, seeds=2, pool=workers)
        store.close()
        done[strategy] = (root / strategy, result)
    return done


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["darts", "darts2", "ms-darts"])
def test_a_tiny_search_records_each_epochs_derived_cell_and_ranks_the_chosen_ones(runs, strategy):
    from autoloss.cell.genotype import parse_genotype
    from autoloss.differentiable.derive import count_skips, derive_genotype

    import torch

    out, result = runs[strategy]
    store = RunStore(out / "run.sqlite", readonly=True)
    config = store.load_config()
    assert config["strategy"] == strategy and config["representation"] == "cell"
    verdicts = derived(store)
    assert sorted(verdicts) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for (epoch, seed), verdict in verdicts.items():
        m = verdict.metrics
        row = store.candidate(verdict.candidate_id)
        weights = torch.tensor(m["weights"])
        assert weights.shape == (EDGES, OPERATIONS)
        assert torch.allclose(weights.sum(dim=1), torch.ones(EDGES), atol=1e-5)  # softmax rows
        genotype = parse_genotype(row.genotype)
        assert str(derive_genotype(weights, softmax=False)) == str(genotype)  # the stored cell is the alphas'
        assert m["skips"] == count_skips(genotype)
        assert all(math.isfinite(m[k]) for k in ("supernet_holdout", "cell_holdout", "eigenvalue"))
        assert m["skip_dropout"] == pytest.approx(0.6 * (1 - epoch))  # 0.6 decaying to 0 at the last epoch
        assert m["epoch"] == epoch and m["seed"] == seed and m["method"] == strategy
        assert m["arch_steps"] == 2  # warm-up 0: an architecture step per weight step
    for seed in (0, 1):  # exactly one chosen epoch per seed: the hold-out minimum of the derived cell
        losses = {e: verdicts[(e, seed)].metrics["cell_holdout"] for e in (0, 1)}
        best = min(losses, key=lambda e: (losses[e], e))
        assert [e for e in (0, 1) if verdicts[(e, seed)].passed] == [best]
    proxied = [v for v in store.verdicts(gate="proxy") if store.candidate(v.candidate_id).generation >= 0]
    chosen_ids = {v.candidate_id for v in verdicts.values() if v.passed}
    screened = {v.candidate_id for v in store.verdicts(gate="equivalence") if v.passed}
    assert {v.candidate_id for v in proxied} == chosen_ids & screened and proxied
    assert all(0 <= v.metrics["fitness"] <= 1 for v in proxied)
    assert result.baseline is not None and result.best
    assert sorted(store.finished_generations()) == [0, 1]
    assert Path(out / "work" / strategy / "seed-1.pt").is_file()
    store.close()


@pytest.mark.slow
def test_early_stopping_ends_a_seed_after_its_patience(tmp_path, data, workers):
    _, store = run_search(tmp_path / "stop", data, "darts", epochs=4, seeds=1, patience=1, eigenvalue=False,
                          pool=workers)
    verdicts = derived(store)
    epochs = sorted(e for e, _ in verdicts)
    losses = [verdicts[(e, 0)].metrics["cell_holdout"] for e in epochs]
    best = min(range(len(losses)), key=lambda e: (losses[e], e))
    # patience 1: it stops at the first epoch that brings no new minimum (or runs all 4)
    stale = [e for e in range(1, len(losses)) if losses[e] >= min(losses[:e])]
    assert epochs == list(range(len(epochs)))
    assert len(epochs) == (stale[0] + 1 if stale else 4)
    assert verdicts[(epochs[-1], 0)].metrics["stop"] == bool(stale)
    assert [e for e in epochs if verdicts[(e, 0)].passed] == [best]
    assert all(v.metrics["eigenvalue"] is None for v in verdicts.values())
    store.close()


def test_a_warmup_epoch_is_recorded_but_never_chosen(tmp_path, data, workers):
    """Warm-up 0.5 of 2 epochs: epoch 0 trains the weights only (alpha is its initial noise); its cell
    is recorded with its losses but cannot be the seed's choice, whatever its hold-out loss."""
    _, store = run_search(tmp_path / "warm", data, "darts", epochs=2, seeds=1, warmup=0.5, eigenvalue=False,
                          pool=workers)
    verdicts = derived(store)
    assert sorted(verdicts) == [(0, 0), (1, 0)]
    warm, trained = verdicts[(0, 0)], verdicts[(1, 0)]
    assert warm.metrics["warmup"] and warm.metrics["arch_steps"] == 0 and math.isfinite(warm.metrics["cell_holdout"])
    assert not trained.metrics["warmup"] and trained.metrics["arch_steps"] == 2
    assert not warm.passed and warm.reason.startswith("warm-up epoch (alpha not trained yet), not eligible")
    assert trained.passed
    proxied = {v.candidate_id for v in store.verdicts(gate="proxy")}
    assert warm.candidate_id not in proxied or store.candidate(warm.candidate_id).genotype == \
        store.candidate(trained.candidate_id).genotype
    store.close()


def _weights(store) -> dict:
    return {key: v.metrics["weights"] for key, v in derived(store).items()}


@pytest.mark.slow
def test_a_sigkilled_search_resumes_to_the_same_alphas(tmp_path, data, workers):
    command = [sys.executable, str(HERE), None, str(data), "--strategy", "darts2", "--epochs", "2", "--seeds", "2"]
    _, reference = run_search(tmp_path / "ref", data, "darts2", epochs=2, seeds=2, pool=workers)
    reference.close()
    out = tmp_path / "killed"
    proc = subprocess.Popen([*command[:2], str(out), *command[3:]], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "run.sqlite"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with RunStore(db, readonly=True) as store:
                    done = len(store.verdicts(gate="derived"))
            except Exception:  # noqa: BLE001 (the store is being created)
                continue
            if done >= 1:  # mid-search: an epoch recorded, others running
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed"
    with RunStore(db, readonly=True) as store:
        assert 1 <= len(store.verdicts(gate="derived")) < 4
    resumed = subprocess.run([*command[:2], str(out), *command[3:]], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with RunStore(tmp_path / "ref" / "run.sqlite", readonly=True) as a, RunStore(db, readonly=True) as b:
        assert len(_weights(a)) == 4 and _weights(a) == _weights(b)  # every epoch's alphas, exactly
        assert [(c.generation, c.index, c.genotype) for c in a.candidates()] == \
               [(c.generation, c.index, c.genotype) for c in b.candidates()]


@pytest.mark.slow
def test_the_report_of_a_differentiable_run_draws_the_per_epoch_figures(runs, tmp_path):
    from autoloss.report import write_report

    written = write_report(runs["ms-darts"][0], tmp_path / "report")
    text = written["report"].read_text()
    for name in ("holdout_losses", "skip_connections", "eigenvalue", "alpha_final"):
        assert written["figures"][name].stat().st_size > 0
        assert written["figures"][name].name in text
    assert "Differentiable search" in text and "seed 0" in text


def test_a_differentiable_strategy_runs_only_with_its_scheduler_on_a_problem_with_a_supernet(tmp_path):
    """The breeding schedulers refuse darts (it proposes nothing) and the differentiable scheduler
    refuses a problem without supernet hooks, each in one line, before anything is evaluated."""
    sys.path.insert(0, str(HERE.parent))
    import toy

    from autoloss.differentiable.strategies import DartsStrategy
    from autoloss.engine.executors import LocalExecutor
    from autoloss.engine.schedulers import run_search as run_scheduled
    from autoloss.engine.study import Study
    from autoloss.errors import UserError

    strategy = DartsStrategy()
    executor = LocalExecutor(workers=1)
    try:
        for mode in ("generational", "steady-state"):
            with RunStore(tmp_path / mode / "run.sqlite") as store:
                with pytest.raises(UserError, match="^--strategy darts runs with its own scheduler, not --mode "
                                                    "generational/steady-state$"):
                    run_scheduled(toy.problem(), strategy, store, executor, mode=mode)
                assert store.candidates() == []
        with RunStore(tmp_path / "darts" / "run.sqlite") as store:
            study = Study(toy.problem(), strategy, store, executor, scheduler=strategy.scheduler.name)
            with pytest.raises(UserError, match="^--strategy darts needs a supernet") as error:
                strategy.scheduler().run(study, strategy)
            assert "\n" not in str(error.value) and store.candidates() == []
    finally:
        executor.close()



# ------------------------------------------------------------------ failures that exited 0 (issue 21, points 8, 9)


def test_a_diverging_seed_stops_as_diverged_and_no_cell_is_derived_from_nan(tmp_path, data, workers):
    """Learning rates of 10 make alpha NaN in the first epoch: the seed stops there (status "diverged",
    not retried), no candidate or derived verdict is stored from the NaN alphas, and the scheduler says
    why nothing was chosen (the CLI exits 1 with it)."""
    from autoloss.differentiable.scheduler import DifferentiableScheduler
    from autoloss.differentiable.strategies import DartsStrategy

    result, store = run_search(tmp_path / "nan", data, "darts", epochs=2, seeds=1, eigenvalue=False, pool=workers,
                               weight_lr=10.0, arch_lr=10.0)
    try:
        assert store.verdicts(gate="derived") == []
        assert [c for c in store.candidates() if c.generation >= 0] == []
        assert not any(item.generation >= 0 for item in result.best)
        failures = store.get_state("darts:failures")
        assert list(failures) == ["0:0"] and failures["0:0"]["status"] == "diverged"
        assert failures["0:0"]["error"].startswith("Diverged: alpha became NaN or infinite in epoch 1")

        class Study:  # what failure_summary reads of a study
            retries = 2

            def get_state(self, key, default=None):
                return store.get_state(key, default)

        reason = DifferentiableScheduler().failure_summary(
            Study(), DartsStrategy(DartsStrategy.Options(epochs=2, seeds=1, warmup=0.0)))
        assert "diverged 1" in reason and "alpha became NaN" in reason
    finally:
        store.close()


TRACKER_TINY = {"channels": 8, "crop_size": 64, "baseline_steps": 3, "baseline_batch": 1, "steps": 4, "batch": 2,
                "pool": 2, "track_iterations": 3, "init_shifts": 1, "mos_steps": 2, "mos_sequences": 1}
TRACKER_OPTIONS = [arg for key, value in TRACKER_TINY.items() for arg in ("--tracker-option", f"{key}={value}")]


@pytest.fixture(scope="module")
def timed_out_run(tmp_path_factory):
    """`autoloss search --tracker dimp_small --data DIR --strategy darts --epoch-timeout 0.01`, in this
    process: (its exit code, stderr, the run folder, the data)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from autoloss.cli import main as cli
    from autoloss.tracking.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("darts-cli")
    generate_dataset(root / "data", {"weights": 2, "architecture": 2, "holdout": 2, "verify": 2, "test": 2}, 6, 64, 0)
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = cli(["search", "--tracker", "dimp_small", "--data", str(root / "data"), "--out", str(root / "run"),
                    *TRACKER_OPTIONS, "--strategy", "darts", "--epochs", "2", "--seeds", "1", "--steps-per-epoch", "2",
                    "--holdout-batches", "2", "--warmup", "0", "--workers", "1", "--epoch-timeout", "0.01", "--quiet"])
    return code, err.getvalue(), root / "run", root / "data"


def test_a_search_whose_every_epoch_timed_out_exits_1_with_the_reason(timed_out_run):
    """It exited 0 saying "no candidate finished"."""
    code, err, run, _ = timed_out_run
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("autoloss: error: no candidate finished"), err
    assert "timeout" in lines[0] and "Traceback" not in err
    with RunStore(run / "run.sqlite", readonly=True) as store:
        assert store.verdicts(gate="derived") == []


def test_evaluate_run_checks_the_stored_cells_before_training_anything(timed_out_run, tmp_path, capsys):
    """`evaluate --tracker --run RUN` trained the baseline before finding that the stored cell does not
    parse; it is checked first, as --cell is."""
    import shutil

    from autoloss.cli import main as cli

    _, _, run, data = timed_out_run
    tampered = tmp_path / "run"
    shutil.copytree(run, tampered)
    with RunStore(tampered / "run.sqlite") as store:
        bad = store.add_candidate(0, 0, "Genotype(normal=[('sep_conv_9x9', 0)])", origin="tampered")
        store.add_verdict(bad, "proxy", True, "fitness 0.9000", {"fitness": 0.9, "ao": 0.9})
    out = tmp_path / "eval"
    code = cli(["evaluate", "--tracker", "dimp_small", "--data", str(data), "--run", str(tampered), "--out", str(out),
                *TRACKER_OPTIONS, "--seeds", "1", "--quiet"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.out + captured.err
    assert len(lines) == 1 and lines[0].startswith("autoloss: error: ") and "genotype" in lines[0], captured.err
    assert not out.exists()  # nothing trained, nothing written


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("data")
    parser.add_argument("--strategy", default="darts")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    result, store = run_search(Path(args.out), Path(args.data), args.strategy, args.epochs, args.seeds)
    store.close()
    print(" ".join(f"{e.genotype}:{e.fitness:.4f}" for e in result.best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
