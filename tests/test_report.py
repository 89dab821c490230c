"""Tests for autoloss.report: `autoloss report RUN_DIR` on stores built the way a search writes them."""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from autoloss.engine.store import BASELINE_GENERATION
from autoloss.engine.store import RunStore
from autoloss.errors import UserError
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.space import load_space
from autoloss.commands.report import add_parser
from autoloss.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("fitness_per_generation.png", "gate_funnel.png", "candidates_over_time.png")
CEI = "Neg(Dot(Mul(Y,W),Log(Softmax(X))))"
BASELINE = {"mos": 0.70, "proxy": 0.76}
# generation -> proxy fitness of the two MOS survivors (None: the proxy training timed out)
PROXY = {0: (0.80, 0.78), 1: (0.85, None)}
DIVERGED = "Diverged: loss became nan at step {}"


@pytest.fixture(scope="module")
def genotype():
    return LossGenotype(load_space("cls_softmax"))


def report_args(*argv: str) -> argparse.Namespace:
    """Parse ``report ARGV`` with a parser built the way autoloss.cli builds its own."""
    parser = argparse.ArgumentParser(prog="autoloss")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["report", *map(str, argv)])


def config(strategy: str = "cse", generations: int = 3, population: int = 8) -> dict:
    return {"search": {"strategy": strategy, "mode": "generational", "population": population,
                       "generations": generations, "top_k": 2, "parents": 2, "crossover": 0.5, "mutation": 0.8,
                       "seed": 0, "mos_margin": 0.0, "max_mos": None, "mos_timeout": 600.0, "proxy_timeout": 60.0},
            "genotype": "loss-tree", "task_name": "noisy-digits", "space": "cls_softmax",
            "task": {"space": "cls_softmax", "steps": 50, "mos_steps": 80, "noise": 0.4}}


def add_baseline(store: RunStore, stages=("mos", "proxy")) -> None:
    cid = store.add_candidate(BASELINE_GENERATION, 0, CEI, [], "baseline")
    for stage in stages:
        store.add_verdict(cid, stage, True, f"fitness {BASELINE[stage]}", {"fitness": BASELINE[stage]}, seconds=2.0)


def population(genotype, generation: int, size: int) -> list[str]:
    """``size`` genotypes bred from CEI for ``generation``, distinct from each other and from other generations'."""
    rng, found = random.Random(0), []
    while len(found) < size * (generation + 1):
        text = str(genotype.initial_population(1, rng)[0])
        if text not in found and text != CEI:
            found.append(text)
    return found[size * generation:]


def add_cse_generation(store: RunStore, genotype, generation: int, proxy=None, finish: bool = True,
                       with_mos: bool = True) -> list[str]:
    """Eight candidates the CSE way: one rejected by validity, one by equivalence, two by convergence,
    four to MOS (one below the threshold, one diverged, two sent on); ``proxy`` their proxy fitness."""
    texts = population(genotype, generation, 8)
    ids = [store.add_candidate(generation, i, t, [CEI], "mutation") for i, t in enumerate(texts)]
    store.add_verdict(ids[0], "validity", False, "NaN in the gradient")
    for cid in ids[1:]:
        store.add_verdict(cid, "validity", True, "finite")
    store.add_verdict(ids[1], "equivalence", False, "same function as an earlier candidate")
    for cid in ids[2:]:
        store.add_verdict(cid, "equivalence", True, "new", {"fingerprint": f"f{cid}"})
    for cid in ids[2:4]:
        store.add_verdict(cid, "convergence", False, "not decreasing in the positive score")
    for cid in ids[4:]:
        store.add_verdict(cid, "convergence", True, "numeric grid")
    if with_mos:
        store.add_verdict(ids[4], "mos", False, "score 0.5000 below the threshold 0.7000", {"fitness": 0.5},
                          seconds=1.0)
        store.add_verdict(ids[5], "mos", False, DIVERGED.format(10 + generation), {"fitness": None},
                          status="error", seconds=0.5)
        for cid, score in zip(ids[6:], (0.74, 0.72)):
            store.add_verdict(cid, "mos", True, f"score {score} in the top 2", {"fitness": score}, seconds=1.0)
    for cid, fitness in zip(ids[6:], proxy or ()):
        if fitness is None:
            store.add_verdict(cid, "proxy", False, "timed out after 60.0 s", {"fitness": None}, status="timeout",
                              seconds=60.0)
        else:
            store.add_verdict(cid, "proxy", True, f"fitness {fitness}", {"fitness": fitness}, seconds=3.0)
    if finish:
        store.finish_generation(generation, {"generation": generation, "funnel": store.funnel(generation),
                                             "mos_threshold": 0.70})
    return texts


@pytest.fixture(scope="module")
def cse_run(tmp_path_factory, genotype):
    """A CSE run of 3 planned generations: two finished, the third killed after its cheap gates."""
    run_dir = tmp_path_factory.mktemp("cse") / "run"
    with RunStore(run_dir / "run.sqlite") as store:
        store.save_config(config())
        add_baseline(store)
        texts = {g: add_cse_generation(store, genotype, g, PROXY[g]) for g in PROXY}
        add_cse_generation(store, genotype, 2, finish=False, with_mos=False)
        funnels = {g: store.funnel(g) for g in (0, 1, 2)}
    args = report_args(run_dir, "--top", 3)
    assert args.handler(args) == 0
    return {"dir": run_dir, "texts": texts, "funnels": funnels, "md": (run_dir / "report" / "report.md").read_text()}


def assert_png(path) -> None:
    """A PNG file that matplotlib drew something in (not a blank canvas)."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 10_000, (path, len(data))
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500
    colours = {tuple(p) for p in pixels[::7, ::7].reshape(-1, pixels.shape[2]).round(2).tolist()}
    assert len(colours) > 20, (path, len(colours))


# ------------------------------------------------------------------------------------------ a full run

def test_figures_are_pngs_with_content(cse_run):
    for name in FIGURES:
        assert_png(cse_run["dir"] / "report" / name)


def test_images_embedded_with_relative_links(cse_run):
    for name in FIGURES:
        assert f"]({name})" in cse_run["md"]


def test_funnel_table_equals_the_store(cse_run):
    section = cse_run["md"].split("## Gate funnel per generation")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    for generation, funnel in cse_run["funnels"].items():  # shown 1-based, as the progress counts
        cells = [c.strip() for c in rows[str(generation + 1)].strip("|").split("|")]
        assert cells[1] == "8"  # bred
        for gate, cell in zip(("validity", "equivalence", "convergence", "mos", "proxy"), cells[2:7]):
            counts = funnel.get(gate)
            assert cell == ("-" if counts is None else f"{counts['in']} / {counts['failed']}"), (generation, gate)
    assert "| 1 | 8 | 8 / 1 | 7 / 1 | 6 / 2 | 4 / 2 | 2 / 0 | 0 | finished |" in cse_run["md"]
    assert "| 3 | 8 | 8 / 1 | 7 / 1 | 6 / 2 | - | - | 4 | unfinished |" in cse_run["md"]
    # the duplicate check's column: how many duplicates each generation removed
    assert "| generation | bred | validity | duplicates | convergence | MOS | proxy |" in section
    assert "duplicates removed" in section


def test_fitness_summary_and_baseline(cse_run):
    md = cse_run["md"]
    assert "Best loss found: proxy accuracy 0.8500 (+0.0900 against the baseline's 0.7600)" in md
    assert "| 1 | 2 / 0 | 0.8000 | 0.7900 | 0.8000 | +0.0400 | 0.7000 |" in md
    assert "| 2 | 1 / 1 | 0.8500 | 0.8500 | 0.8500 | +0.0900 | 0.7000 |" in md
    assert "The initial loss CEI" in md and "proxy accuracy 0.7600" in md and "MOS accuracy 0.7000" in md
    assert "built-in task `noisy-digits`" in md and "N / E / K / P | 8 / 3 / 2 / 2" in md


def test_top_losses_as_formulas(cse_run, genotype):
    md = cse_run["md"]
    assert "## Top 3 losses" in md
    ranked = [(cse_run["texts"][1][6], 0.85, 0.74), (cse_run["texts"][0][6], 0.80, 0.74),
              (cse_run["texts"][0][7], 0.78, 0.72)]
    for rank, (text, fitness, mos) in enumerate(ranked, 1):
        described = genotype.describe(genotype.parse(text))
        assert f"`{described['infix']}`" in md
        assert f"- prefix: `{described['expression']}`" in md
        assert f"- LaTeX: ${described['latex']}$" in md
        assert f"| {rank} | {fitness:.4f} | {fitness - 0.76:+.4f} | {mos:.4f} |" in md
    assert md.index(ranked[0][0]) < md.index(ranked[1][0]) < md.index(ranked[2][0])


def test_failures_summarised_by_reason(cse_run):
    md = cse_run["md"]
    assert "| MOS | diverged | 2 | Diverged: loss became nan at step 10 | gen 1 #5, gen 2 #5 |" in md
    assert "| proxy | timeout | 1 | timed out after 60.0 s | gen 2 #7 |" in md


def test_partial_run_says_what_is_missing(cse_run):
    md = cse_run["md"]
    assert "## What is missing" in md
    assert "2 of 3 generations finished; generation 3 started but did not finish" in md
    assert "Generation 3: no proxy result yet" in md


# ------------------------------------------------------------------------------------------ partial runs

def test_only_a_baseline(tmp_path, capsys):
    with RunStore(tmp_path / "run.sqlite") as store:
        store.save_config(config())
        add_baseline(store, stages=("mos",))  # killed during the baseline's proxy training
    args = report_args(tmp_path)
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"report:  {tmp_path / 'report' / 'report.md'}" in printed
    for name in FIGURES:
        assert f"figure:  {tmp_path / 'report' / name}" in printed
        assert (tmp_path / "report" / name).read_bytes()[:8] == PNG_SIGNATURE
    assert "missing: The baseline has no proxy result yet" in printed
    assert "The baseline has no proxy result yet" in md
    assert "No searched candidate has a proxy result yet" in md
    assert "0 of 3 generations finished" in md
    assert "No generation bred yet." in md


def test_failed_baseline(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        store.save_config(config(strategy="random", generations=1))
        cid = store.add_candidate(BASELINE_GENERATION, 0, CEI, [], "baseline")
        store.add_verdict(cid, "proxy", False, "worker died (exit code -9)", {"fitness": None}, status="crashed",
                          seconds=5.0)
    written = write_report(tmp_path)
    md = written["report"].read_text()
    assert "The baseline's proxy evaluation failed (crashed: worker died (exit code -9))" in md
    assert "| proxy | crashed | 1 | worker died (exit code -9) | baseline |" in md
    assert "proxy failed (crashed: worker died (exit code -9))" in md


def test_finished_generation_without_proxy_result(tmp_path, genotype):
    with RunStore(tmp_path / "run.sqlite") as store:
        store.save_config(config(generations=1))
        add_baseline(store)
        add_cse_generation(store, genotype, 0, proxy=None, finish=True)
        funnel = store.funnel(0)
    written = write_report(tmp_path, tmp_path / "elsewhere", top=5)
    md = written["report"].read_text()
    assert written["report"].parent == tmp_path / "elsewhere"
    assert funnel["mos"] == {"in": 4, "passed": 2, "failed": 2} and "proxy" not in funnel
    assert "Generation 1: no candidate reached the proxy (2 passed MOS but went no further)" in md
    assert "| 1 | 8 | 8 / 1 | 7 / 1 | 6 / 2 | 4 / 2 | - | 2 | finished |" in md
    assert "| 1 | 0 / 0 | - | - | - | - | 0.7000 | no proxy result |" in md
    assert "| generations finished | 1 of 1 |" in md


def test_vanilla_run_has_no_mos(tmp_path, genotype):
    """Vanilla evolution: validity, then the proxy; a rebred baseline gets the baseline's result copied."""
    with RunStore(tmp_path / "run.sqlite") as store:
        store.save_config(config(strategy="vanilla", generations=1, population=5))
        add_baseline(store, stages=("proxy",))
        texts = population(genotype, 0, 4) + [CEI]
        ids = [store.add_candidate(0, i, t, [CEI], "mutation") for i, t in enumerate(texts)]
        store.add_verdict(ids[0], "validity", False, "NaN in the loss")
        for cid, fitness in zip(ids[1:4], (0.7, 0.9, 0.8)):
            store.add_verdict(cid, "validity", True, "finite")
            store.add_verdict(cid, "proxy", True, f"fitness {fitness}", {"fitness": fitness}, seconds=1.0)
        store.add_verdict(ids[4], "validity", True, "finite")
        store.add_verdict(ids[4], "proxy", True, "fitness 0.76", {"fitness": 0.76}, seconds=2.0)  # the copy
        store.finish_generation(0, {"generation": 0, "funnel": store.funnel(0)})
    written = write_report(tmp_path)
    md = written["report"].read_text()
    assert "| 1 | 5 | 5 / 1 | 4 / 0 | 0 | finished |" in md
    assert "| proxy | 5 | 5 | 0 | 4 | 1 | 0 | 5 s |" in md  # 4 trainings run (baseline's included), 1 reused
    assert "Best loss found: proxy accuracy 0.9000 (+0.1400 against the baseline's 0.7600)" in md
    assert "## Top 3 losses" in md  # the rebred baseline is the baseline, not a found loss
    assert "## What is missing" not in md and "MOS threshold" not in md
    assert_png(written["figures"]["candidates_over_time"])


# ------------------------------------------------------------------------------------------ bad input

def _user_error(run_dir, *extra) -> str:
    args = report_args(run_dir, *extra)
    with pytest.raises(UserError) as caught:
        args.handler(args)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def test_missing_directory(tmp_path):
    assert "does not exist" in _user_error(tmp_path / "nope")


def test_directory_without_store(tmp_path):
    assert "holds no run.sqlite" in _user_error(tmp_path)


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "is not a directory" in _user_error(tmp_path / "notes.txt")


def test_random_file_named_run_sqlite_is_left_untouched(tmp_path):
    data = bytes(random.Random(0).getrandbits(8) for _ in range(4096))
    (tmp_path / "run.sqlite").write_bytes(data)
    assert "is not a run store" in _user_error(tmp_path)
    assert (tmp_path / "run.sqlite").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sqlite"]


def test_other_sqlite_database(tmp_path):
    db = sqlite3.connect(tmp_path / "run.sqlite")
    db.execute("CREATE TABLE things (x INTEGER)")
    db.commit()
    db.close()
    assert "without the run tables" in _user_error(tmp_path)


def test_store_without_config(tmp_path):
    RunStore(tmp_path / "run.sqlite").close()
    assert "no run config" in _user_error(tmp_path)


def test_top_must_be_positive(tmp_path, capsys):
    from autoloss.cli import main

    with pytest.raises(SystemExit) as info:
        main(["report", str(tmp_path), "--top", "0"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autoloss: error:") and "--top" in lines[0]


def test_importing_the_package_leaves_matplotlib_alone():
    code = "import sys, autoloss.report; sys.exit('matplotlib' in sys.modules)"
    root = Path(__file__).resolve().parents[1]  # this checkout, whatever copy of autoloss is installed
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False, timeout=60).returncode == 0


# ------------------------------------------------------------------------------------------ seeds and claims

def _seeded_run(tmp_path, genotype, fresh: tuple[float, ...]) -> Path:
    """A finished run whose baseline has 3 proxy seeds (0.76, 0.74, 0.78) and whose best candidate (proxy
    0.85 on the seed that ranked it) was confirmed with the fresh seeds ``fresh`` (gates proxy#1, proxy#2...)."""
    run_dir = tmp_path / "run"
    with RunStore(run_dir / "run.sqlite") as store:
        store.save_config(config(generations=2))
        add_baseline(store)
        base = store.candidates(BASELINE_GENERATION)[0].id
        for k, value in ((1, 0.74), (2, 0.78)):
            store.add_verdict(base, f"proxy#{k}", True, f"fitness {value}", {"fitness": value}, seconds=2.0)
        texts = {g: add_cse_generation(store, genotype, g, PROXY[g]) for g in PROXY}
        best = next(c.id for c in store.candidates(1) if c.genotype == texts[1][6])
        for k, value in enumerate(fresh, 1):
            store.add_verdict(best, f"proxy#{k}", True, f"fitness {value}", {"fitness": value}, seconds=2.0)
    return run_dir


def test_the_headline_states_a_confirmed_claim_with_its_interval_and_test(tmp_path, genotype, monkeypatch):
    import autoloss.report.figures as figures

    spans = []
    real = figures._baseline_line
    monkeypatch.setattr(figures, "_baseline_line", lambda ax, value, label, sd=None, n=1: (
        spans.append((value, sd, n)), real(ax, value, label, sd, n))[1])
    run_dir = _seeded_run(tmp_path, genotype, (0.84, 0.86, 0.85))
    assert write_report(run_dir)["report"].is_file()
    md = (run_dir / "report" / "report.md").read_text()
    head = md.split("## ")[0]
    # the baseline's mean over 3 seeds, the candidate's fresh seeds, the difference ± se, the bound and the test
    assert "**Confirmed better than the baseline**" in head
    assert "0.8500 ± 0.0100 over 3 fresh seeds" in head and "0.7600 ± 0.0200 sd (3 seeds)" in head
    assert "difference +0.0900 ± 0.0129" in head and "lower bound" in head and "Welch one-sided t-test at level 0.05" in head
    # every printed fitness with several seeds is mean ± sd (n): the baseline, the confirmed candidate
    assert "proxy accuracy 0.7600 ± 0.0200 (3)" in md
    assert "| 1 | 0.8500 ± 0.0082 (4) | +0.0900 |" in md and "better (+0.0900 ± 0.0129, 3 fresh seeds)" in md
    assert "unconfirmed (one seed)" in md  # the runner-up ran one seed
    # both fitness plots draw the baseline's mean with its band (sd over its 3 seeds)
    assert spans.count((pytest.approx(0.76), pytest.approx(0.02), 3)) == 2


def test_the_headline_says_plainly_when_nothing_is_distinguishable(tmp_path, genotype):
    run_dir = _seeded_run(tmp_path, genotype, (0.77, 0.75, 0.76))
    write_report(run_dir)
    head = (run_dir / "report" / "report.md").read_text().split("## ")[0]
    assert "**Nothing confirmed better than the baseline**" in head
    assert "not distinguishable from the baseline with 3 fresh seeds (difference +0.0000 ± 0.0129" in head
    assert "Confirmed better" not in head
