"""Rediscovery: a loss search with a known answer.

The sigmoid classification loss of ``fcos_small`` is searched starting from plain BCE (a space file that
is the bundled ``cls_sigmoid`` with BCE as its initial loss) instead of FLI. Focal loss is known to beat
BCE on a dense detector: a search that works should find a loss that beats BCE too, ideally a focal-like
one. What is measured, all in one run of this script:

1. the search (``autoloss search --strategy cse``, confirmation of its best candidates on fresh seeds);
2. FL trained on the same proxy with the baseline's seeds: FL's band next to BCE's;
3. on a **test split that no search stage saw** (``annotations/instances_test.json``, drawn after train
   and val), BCE, FL and the search's confirmed best retrained with ``--test-seeds`` seeds the search never
   used: the found loss against BCE (Welch's one-sided test, and the difference in pooled sd) and the share
   of the BCE-to-FL gap it closes;
4. whether the found loss is focal-like (a modulating factor on the easy negatives): its gradient on a
   negative (y = 0) relative to BCE's, at an easy negative (s = 0.05) against a hard one (s = 0.5); the
   quotient is about 0.012 for FL, 1 for BCE.

Everything is kept in ``OUT`` (the search resumes, finished trainings are not redone). The section
``rediscovery`` of docs/benchmarks.md and docs/benchmark_rediscovery.png are rewritten at the end::

    python3 scripts/benchmark_rediscovery.py --pretrain            # the benchmark (about 45 min, 2 cores)
    python3 scripts/benchmark_rediscovery.py --tiny --no-write     # a few iterations: the pipeline only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_report import write_section  # noqa: E402

from autoloss.detection.presets import PRESETS  # noqa: E402

BCE = "Neg(Add(Mul(Y,Log(Sig(X))),Mul(Sub(1,Y),Log(Sub(1,Sig(X))))))"
DETECTOR = "fcos_small"
# the data: the "clutter" preset, where the proxy tells FL from BCE (docs/benchmarks.md, proxy reliability), with
# a held-out test split as large as the validation split
FULL = {"population": 48, "generations": 6, "top_k": 6, "parents": 5, "proxy_iters": 200, "mos_iters": 30,
        "baseline_seeds": 3, "confirm_top": 2, "confirm_seeds": 4, "test_seeds": 3,
        "data": {**PRESETS["clutter"], "num_test": 64}}
TINY = {"population": 24, "generations": 1, "top_k": 2, "parents": 2, "proxy_iters": 2, "mos_iters": 2,
        "baseline_seeds": 2, "confirm_top": 1, "confirm_seeds": 4, "test_seeds": 2,
        "data": {**PRESETS["clutter"], "num_train": 8, "num_val": 4, "num_test": 4}}
TEST_SEED_BASE = 1000  # the test trainings' seeds: none of the search's (its run seeds are small integers)


def write_space(path: Path) -> str:
    """The bundled ``cls_sigmoid`` space with BCE among its losses and as the initial one, written to ``path``."""
    import yaml

    from autoloss.files import write_atomic

    data = yaml.safe_load((ROOT / "search_spaces" / "cls_sigmoid.yaml").read_text())
    data["name"] = "cls_sigmoid_from_bce"
    data["losses"] = {"BCE": BCE, **data["losses"]}
    data["initial"] = "BCE"
    write_atomic(path, "# written by scripts/benchmark_rediscovery.py: cls_sigmoid, BCE as the initial loss\n"
                 + yaml.safe_dump(data, sort_keys=False))
    return str(path.resolve())


def run_search(out: Path, data: str, space: str, setting: dict, checkpoint: str | None, workers: int) -> float:
    """The search (resumed when ``out/search`` holds one); its wall-clock in seconds, this call's part."""
    search = out / "search"
    command = [sys.executable, "-m", "autoloss.cli", "search", "--detector", DETECTOR, "--branch", "cls",
               "--data", data, "--space", space, "--strategy", "cse",
               "--population", str(setting["population"]), "--generations", str(setting["generations"]),
               "--top-k", str(setting["top_k"]), "--parents", str(setting["parents"]),
               "--proxy-iters", str(setting["proxy_iters"]), "--mos-iters", str(setting["mos_iters"]),
               "--baseline-seeds", str(setting["baseline_seeds"]), "--confirm-top", str(setting["confirm_top"]),
               "--confirm-seeds", str(setting["confirm_seeds"]), "--workers", str(workers), "--out", str(search)]
    if checkpoint:
        command += ["--backbone-checkpoint", checkpoint]
    if (search / "run.sqlite").exists():
        command.append("--resume")
    started = time.perf_counter()
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise SystemExit(f"the search failed (its message is above); rerun to resume it: {' '.join(command)}")
    return time.perf_counter() - started


def search_figures(search: Path) -> dict:
    """What the run found: the proxy evaluations in order, the best-so-far curve, the baseline's seeds, the
    confirmed best (the top of the search's own standing) and its claim against the baseline."""
    from autoloss.engine.runs import open_run
    from autoloss.engine.store import BASELINE_GENERATION

    record = open_run(search)
    proxy = sorted((v for v in record.verdicts(gate="proxy") if v.status == "ok"
                    and record.candidate(v.candidate_id).generation != BASELINE_GENERATION), key=lambda v: v.created)
    curve, best = [], -math.inf
    for verdict in proxy:
        best = max(best, float(verdict.metrics["fitness"]))
        curve.append(best)
    baseline = record.baseline_sample()
    standing = [(row, sample) for row, _, sample in record.standing()
                if row.generation != BASELINE_GENERATION]
    claims = record.claims()
    found_row, found_sample = standing[0] if standing else (None, None)
    claim = claims.get(found_row.id) if found_row is not None else None
    return {"task": record.config["task"], "seed": int(record.config.get("seed") or 0),
            "proxy_evaluations": len(proxy),
            "mos_evaluations": sum(1 for v in record.verdicts(gate="mos") if v.status == "ok"),
            "curve": curve, "baseline": list(baseline.values),
            "found": found_row.genotype if found_row is not None else None,
            "found_proxy": list(found_sample.values) if found_sample is not None else [],
            "claim": claim.text(digits=4) if claim is not None else "no claim: not retrained",
            "claimed_better": bool(claim is not None and claim.better)}


def train_runs(jobs: list[tuple], log: Path, workers: int) -> dict:
    """Run each job ``(key, fn, *arguments)`` whose key is not yet in ``log`` (jsonl, resumable): ``{key: fitness}``."""
    from autoloss.engine.executors import Job, make_executor

    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
                done[tuple(row["key"])] = row["value"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill: run it again
    todo = [job for job in jobs if tuple(job[0]) not in done]
    if todo:
        executor = make_executor("local", workers=workers, start_method="spawn")
        try:
            with log.open("a") as handle:
                for index, _, outcome in executor.stream((Job(*job[1:]) for job in todo), timeout=3 * 3600.0):
                    key = list(todo[index][0])
                    value = float(outcome.value["fitness"]) if outcome.ok else None
                    handle.write(json.dumps({"key": key, "value": value,
                                             "error": None if outcome.ok else (outcome.error or outcome.status)[:300]})
                                 + "\n")
                    handle.flush()
                    done[tuple(key)] = value
                    print(f"  {key}: {value}", flush=True)
        finally:
            executor.close()
    return done


def fl_on_proxy(task: dict, run_seed: int, seeds: int, out: Path, workers: int) -> list[float]:
    """FL trained on the search's own proxy (its task: data, backbone, iterations) with the baseline's seeds."""
    from autoloss.detection.task import evaluate
    from autoloss.engine.evidence import seed_value
    from autoloss.loss.space import load_space

    fl = load_space(task["space"]).losses["FL"]
    values = [seed_value(run_seed, k) for k in range(seeds)]
    jobs = [(("FL", "proxy", seed), evaluate, task, fl, "proxy", seed) for seed in values]
    done = train_runs(jobs, out / "fl_proxy.jsonl", workers)
    return [done[("FL", "proxy", seed)] for seed in values if done.get(("FL", "proxy", seed)) is not None]


def on_test_split(out: Path, data: str, space: str, found: str, setting: dict, checkpoint: str | None,
                  workers: int) -> dict:
    """BCE, FL and the found loss retrained with fresh seeds, scored on the held-out test split (an ``autoloss
    evaluate`` comparison with these three variants: its runs are kept in ``OUT/test/runs.jsonl``)."""
    from autoloss.detection.compare import Comparison, Variant
    from autoloss.engine.executors import make_executor

    losses = {"BCE": BCE, "FL": _fl(space), "found": found}
    comparison = Comparison.prepare(DETECTOR, data, out / "test", loss_cls=found, seeds=setting["test_seeds"],
                                    iters=setting["proxy_iters"], space_cls=space, split="test",
                                    backbone_checkpoint=checkpoint)
    variants = tuple(Variant(name, cls_loss={"type": "SearchedSigmoidClsLoss", "expression": text, "space": space},
                             iou_aware=True, baseline=name == "BCE") for name, text in losses.items())
    seeds = tuple(range(TEST_SEED_BASE, TEST_SEED_BASE + setting["test_seeds"]))
    comparison = replace(comparison, variants=variants, seeds=seeds)
    executor = make_executor("local", workers=workers, start_method="spawn")
    try:  # another found loss (or setting) in the same OUT is refused, never mixed in
        runs = comparison.run(executor, timeout=3 * 3600.0, on_result=lambda record: print(
            f"  test {record['variant']} seed {record['seed']}: {record.get('fitness', record['status'])}", flush=True))
    finally:
        executor.close()
    return {name: [float(runs[name, seed]["fitness"]) for seed in seeds if (name, seed) in runs] for name in losses}


def negative_ratio(expression: str, space: str) -> dict:
    """How the loss pushes down a negative entry (y = 0, w = 0) against BCE: the gradient with respect to the
    logit over BCE's (which is s), at an easy negative (s = 0.05) and a hard one (s = 0.5), and their quotient.
    A modulating factor on the easy negatives makes the quotient small: FL's is about 0.012, BCE's (and any
    multiple of BCE's) 1; a constant added to the loss changes nothing."""
    import torch

    from autoloss.loss.compile import compile_loss
    from autoloss.loss.genotype import LossGenotype
    from autoloss.loss.space import load_space

    loaded = load_space(space)
    genotype = LossGenotype(loaded)
    probabilities = torch.tensor([[0.05], [0.5]], dtype=torch.float64)
    gradients = []
    for text in (expression, BCE):
        logits = torch.log(probabilities / (1 - probabilities)).requires_grad_(True)
        zeros = torch.zeros_like(logits)
        loss = compile_loss(genotype.parse(text), loaded.output)(X=logits, Y=zeros, W=zeros)
        (gradient,) = torch.autograd.grad(loss.sum(), logits)
        gradients.append(gradient.flatten())
    easy, hard = (gradients[0] / gradients[1]).tolist()
    quotient = easy / hard if hard > 0 else math.inf
    return {"easy": easy, "hard": hard, "quotient": quotient, "focal_like": easy >= 0 and hard > 0 and quotient < 0.5}


def pooled_sd(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    return math.sqrt(((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b))
                     / (len(a) + len(b) - 2))


def summarise(found: dict, fl_proxy: list[float], test: dict, wall: dict, space: str) -> dict:
    from autoloss.engine import evidence

    bce, fl, mine = test["BCE"], test["FL"], test["found"]
    claim = evidence.compare(mine, bce) if len(mine) > 1 and len(bce) > 1 else None
    sd = pooled_sd(mine, bce)
    gap = statistics.fmean(fl) - statistics.fmean(bce) if fl and bce else None
    closed = ((statistics.fmean(mine) - statistics.fmean(bce)) / gap) if gap and mine else None
    diff_sd = (statistics.fmean(mine) - statistics.fmean(bce)) / sd if sd else None
    return {"search": {k: v for k, v in found.items() if k not in ("task", "seed")}, "fl_proxy": fl_proxy, "test": test,
            "test_p": claim.p if claim is not None else None,
            "test_better": bool(claim is not None and claim.better),
            "difference_in_sd": diff_sd, "gap_closed": closed,
            "fl_minus_bce_in_sd": (gap / pooled_sd(fl, bce)) if gap is not None and pooled_sd(fl, bce) else None,
            "negatives": {"found": negative_ratio(found["found"], space), "FL": negative_ratio(
                _fl(space), space)}, "wall": wall,
            "targets": {"beats_bce_by_2sd": bool(diff_sd is not None and diff_sd > 2 and claim is not None
                                                 and claim.better),
                        "closes_half_the_gap": bool(closed is not None and gap is not None and gap > 0 and closed >= 0.5),
                        "within_45_minutes": wall.get("total", math.inf) <= 45 * 60}}


def _fl(space: str) -> str:
    from autoloss.loss.space import load_space

    return load_space(space).losses["FL"]


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f} (n={len(values)})"


def section(result: dict, setting: dict, backbone: str, load: str, infix: dict, space: str, data: str) -> str:
    search, test, neg = result["search"], result["test"], result["negatives"]
    wall = result["wall"]
    verdict = "met" if all(result["targets"].values()) else "missed"
    lines = [f"`{DETECTOR}` in the sigmoid space, the search starting from BCE; data: {data}; backbone: {backbone}. "
             f"CSE with population {setting['population']}, {setting['generations']} generations, K = {setting['top_k']}, "
             f"{setting['proxy_iters']} proxy / {setting['mos_iters']} MOS iterations; the baseline (BCE) on "
             f"{setting['baseline_seeds']} seeds, the best {setting['confirm_top']} confirmed on up to "
             f"{setting['confirm_seeds']} seeds. Load average when the script started: {load}.", "",
             f"- search: {search['proxy_evaluations']} proxy and {search['mos_evaluations']} MOS evaluations, "
             f"{wall.get('search', 0) / 60:.1f} min",
             f"- proxy (validation split, mAP %): BCE {_ms(search['baseline'])}, FL {_ms(result['fl_proxy'])}, "
             f"found {_ms(search['found_proxy'])}",
             f"- the search's own claim for its best: {search['claim']}",
             f"- found: `{search['found']}` = {infix.get('found', '')}",
             f"- FL: `{_fl(space)}` = {infix.get('FL', '')}", "",
             "On the held-out test split (no search stage saw it), fresh seeds "
             f"{TEST_SEED_BASE}..{TEST_SEED_BASE + setting['test_seeds'] - 1}, mAP %:", "",
             "| loss | test mAP mean ± sd |", "|---|---:|",
             *[f"| {name} | {_ms(values)} |" for name, values in test.items()], "",
             f"- found - BCE: {_num(result['difference_in_sd'])} pooled sd, Welch's one-sided p = "
             f"{_num(result['test_p'], 3)} ({'better' if result['test_better'] else 'not shown better'} at 5%)",
             f"- FL - BCE: {_num(result['fl_minus_bce_in_sd'])} pooled sd; share of the BCE-to-FL gap the found loss "
             f"closes: {_num(result['gap_closed'])}",
             f"- gradient on a negative over BCE's, easy (s = 0.05) / hard (s = 0.5): found {_num(neg['found']['easy'], 3)} / "
             f"{_num(neg['found']['hard'], 3)} (quotient {_num(neg['found']['quotient'], 3)}), FL "
             f"{_num(neg['FL']['easy'], 3)} / {_num(neg['FL']['hard'], 3)} (quotient {_num(neg['FL']['quotient'], 3)}): "
             f"the found loss is {'' if neg['found']['focal_like'] else 'not '}focal-like (a quotient below 0.5: easy "
             "negatives down-weighted against hard ones)",
             f"- wall-clock: {wall.get('total', 0) / 60:.1f} min in all (pretraining {wall.get('pretrain', 0) / 60:.1f}, "
             f"search {wall.get('search', 0) / 60:.1f}, FL on the proxy {wall.get('fl', 0) / 60:.1f}, test "
             f"{wall.get('test', 0) / 60:.1f})", "",
             "Targets (issue 23): within 45 minutes, the found loss beats BCE on the test split by more than 2 sd "
             "(and Welch's test), closing at least half the BCE-to-FL gap: "
             + ", ".join(f"{k.replace('_', ' ')}: {'yes' if v else 'no'}" for k, v in result["targets"].items())
             + f" ({verdict})."]
    return "\n".join(lines) + "\n"


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autoloss.files import write_atomic

    search = result["search"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    curve = [100 * v for v in search["curve"]]
    ax.step(range(1, len(curve) + 1), curve, where="post", label="search: best proxy mAP so far")
    for name, values, colour in (("BCE (baseline seeds)", search["baseline"], "tab:red"),
                                 ("FL (same seeds)", result["fl_proxy"], "tab:green")):
        if values:
            mean = 100 * statistics.fmean(values)
            sd = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
            ax.axhline(mean, color=colour, lw=1, label=f"{name}: {mean:.1f} ± {sd:.1f}")
            ax.axhspan(mean - sd, mean + sd, color=colour, alpha=0.15)
    ax.set_xlabel("proxy evaluations")
    ax.set_ylabel("proxy mAP (%), validation split")
    ax.set_title("Rediscovery: fcos_small, the search starting from BCE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda file: fig.savefig(file, dpi=110, format="png"))
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain", action="store_true",
                        help="the backbone starts from a ResNet pretrained on the training split's objects")
    parser.add_argument("--tiny", action="store_true", help="a few iterations, a small dataset: the pipeline only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/benchmark-rediscovery", help="where everything is kept (resumable)")
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--figure", default=str(ROOT / "docs" / "benchmark_rediscovery.png"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--no-write", action="store_true", help="print; leave docs/ alone")
    args = parser.parse_args()
    from autoloss.errors import UserError

    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    from autoloss.detection.synthetic import make_synthetic_coco
    from autoloss.files import write_atomic

    setting = TINY if args.tiny else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = f"{os.getloadavg()[0]:.1f} (1-min average, 2 cores)"
    walls_file = out / "walls.json"  # each stage's wall-clock, kept across resumed runs
    wall = json.loads(walls_file.read_text()) if walls_file.exists() else {}

    def timed(stage: str, fn):
        started = time.perf_counter()
        value = fn()
        wall[stage] = wall.get(stage, 0.0) + time.perf_counter() - started
        wall["total"] = sum(v for k, v in wall.items() if k != "total")
        write_atomic(walls_file, json.dumps(wall))
        return value

    made = make_synthetic_coco(out / "data", **setting["data"])
    data = made["out_dir"]
    space = write_space(out / "cls_sigmoid_from_bce.yaml")
    checkpoint, backbone = None, "ResNet-18 from scratch"
    if args.pretrain:
        from autoloss.detection.pretrain import PretrainSettings, pretrained_backbone

        settings = PretrainSettings(steps=2, batch=4, crop=16) if args.tiny else PretrainSettings()
        checkpoint = str(timed("pretrain", lambda: pretrained_backbone(
            made["train_ann"], made["train_img_dir"], out / "backbone", settings, progress=print)).resolve())
        backbone = f"ResNet-18 pretrained on the training split's objects ({settings.steps} steps)"
    if "search" not in wall or not (out / "search" / "done").exists():
        timed("search", lambda: run_search(out, data, space, setting, checkpoint, args.workers))
        write_atomic(out / "search" / "done", "the search finished\n")
    found = search_figures(out / "search")
    if found["found"] is None:
        print("the search evaluated no candidate on the proxy: nothing to test", file=sys.stderr)
        return 1
    fl_proxy = timed("fl", lambda: fl_on_proxy(found["task"], found["seed"], setting["baseline_seeds"], out, args.workers))
    test = timed("test", lambda: on_test_split(out, data, space, found["found"], setting, checkpoint, args.workers))
    result = summarise(found, fl_proxy, test, wall, space)
    from autoloss.loss.genotype import LossGenotype
    from autoloss.loss.space import load_space

    genotype = LossGenotype(load_space(space))
    infix = {name: genotype.describe(genotype.parse(text))["infix"] for name, text in
             (("found", found["found"]), ("FL", _fl(space)))}
    options = setting["data"]
    data_words = (f"{made['num_train']} train / {made['num_val']} val / {made['num_test']} test synthetic images, "
                  f"1-{options['max_objects']} objects of {options['sizes'][0]}-{options['sizes'][1]} px and 0-"
                  f"{options['distractors']} unannotated distractor shapes per image (the 'clutter' preset)")
    text = section(result, setting, backbone, load, infix, space, data_words)
    print(text)
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2, default=str))
    if not args.no_write:
        figure(result, Path(args.figure))
        write_section(Path(args.markdown), "rediscovery", "Rediscovery: a search from BCE on fcos_small",
                      text + f"\n![best proxy mAP so far against proxy evaluations]({Path(args.figure).name})\n",
                      "python3 scripts/benchmark_rediscovery.py" + (" --pretrain" if args.pretrain else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
