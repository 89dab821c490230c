"""The tracker side of the command line: ``autoloss search --tracker`` and ``autoloss evaluate --tracker``.

Everything a user can get wrong (options, the data folders, the boxes, the frames, the backbone
checkpoint, genotype strings) is checked here before anything is trained, each problem one
:class:`~autoloss.errors.UserError` line (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from autoloss.errors import UserError
from autoloss.tracking.problem import (BASELINE_FILE, ROLES, StageSettings, apply_options, check_data, resolve_splits,
                                       tracker, tracking_problem)

LOSS_OPTIONS = ("branch", "space", "proxy_iters", "mos_iters", "batch_size", "steps", "iou")
SPACE_NAME = "DARTS cell: 4 nodes of 2 edges, 8 operations"
MAX_CPU_WORKERS = 8


@dataclass
class Prepared:
    """A tracker search or evaluation, checked: the settings, the stages and the data's folders."""

    name: str
    settings: object  # TrackingSettings
    stages: StageSettings
    data_root: Path | None  # None: the demo's, generated into the run directory
    splits: dict


def _check_common(args, command: str) -> None:
    spec = tracker(args.tracker)
    if args.demo and args.data:
        raise UserError("--demo generates its own synthetic tracking data: drop --data, or drop --demo")
    if args.demo and args.tracker != "dimp_small":
        raise UserError(f"--demo runs the CPU tracker: use --tracker dimp_small (not {args.tracker})")
    if not args.demo and not args.data:
        raise UserError(f"a tracker {command} needs --data DIR (GOT-10k-layout folders {', '.join(r + '/' for r in ROLES)}), "
                        "or --demo")
    if spec.needs_checkpoint and not args.backbone_checkpoint:
        raise UserError(f"--tracker {args.tracker} needs --backbone-checkpoint FILE (ImageNet ResNet weights): "
                        "its backbone is not trained from scratch")


def check_search_args(args) -> None:
    """Options that make no sense for a tracker search, and the demo's preconditions."""
    for option in LOSS_OPTIONS:
        if getattr(args, option, None) is not None:
            raise UserError(f"--{option.replace('_', '-')} applies to loss searches, not to --tracker")
    _check_common(args, "search")


def check_checkpoint(settings, path: str) -> str:
    """The checkpoint's resolved path, once a backbone of the settings' depth has loaded it (or one line)."""
    from autoloss.tracking.backbone import TrackingBackbone, load_backbone_checkpoint

    resolved = Path(path).expanduser().resolve()
    load_backbone_checkpoint(TrackingBackbone(settings.depth, settings.base_channels), resolved)
    return str(resolved)


def prepare(args) -> Prepared:
    """Settings (with --tracker-option and --backbone-checkpoint) and the checked data, before anything is written."""
    spec = tracker(args.tracker)
    settings, stages = apply_options(spec.settings, StageSettings(), getattr(args, "tracker_option", None))
    if args.backbone_checkpoint:
        settings = dataclasses.replace(settings, backbone_checkpoint=check_checkpoint(settings, args.backbone_checkpoint))
    data_root, splits = None, {role: role for role in ROLES}
    if not args.demo:
        data_root = Path(args.data).expanduser().resolve()
        splits = resolve_splits(data_root)
        check_data(data_root, splits)
    return Prepared(args.tracker, settings, stages, data_root, splits)


prepare_search = prepare


def _say(args, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def materialise(args, prepared: Prepared, out: Path, baseline_path: Path | None = None) -> tuple[Path, Path]:
    """The data root (the demo's generated under OUT/data) and the trained (or re-used) baseline checkpoint."""
    from autoloss.tracking.train import prepare_synthetic_data, train_baseline

    settings = prepared.settings
    data_root = prepared.data_root
    if data_root is None:
        data_root = out / "data"
        start = time.perf_counter()
        prepare_synthetic_data(settings, data_root)
        counts = check_data(data_root, prepared.splits)
        _say(args, f"demo: synthetic GOT-10k-layout sequences in {data_root} ("
                   + ", ".join(f"{counts[r]} {r}" for r in ROLES) + f", {settings.sequence_frames} frames of "
                   f"{settings.frame_size} px; {time.perf_counter() - start:.0f} s)")
    baseline = baseline_path or out / BASELINE_FILE
    start = time.perf_counter()
    _say(args, f"baseline tracker {prepared.name} (hand-designed neck): ResNet-{settings.depth}, C = {settings.channels}, "
               f"{settings.crop_size} px crops, {settings.baseline_steps} training steps (re-used from {baseline} "
               "when it matches)")
    import torch

    on_device = dataclasses.replace(settings, device="cuda" if torch.cuda.is_available() else "cpu")
    train_baseline(on_device, data_root, baseline, log=None if getattr(args, "quiet", False) else
                   (lambda line: print("  " + line, flush=True)), split=prepared.splits["weights"])
    _say(args, f"baseline tracker ready in {time.perf_counter() - start:.0f} s: {baseline}")
    return data_root, baseline


def default_workers(args) -> None:
    """One worker per GPU (the executor's default), else one per core (each runs one torch thread)."""
    from autoloss.engine.executors import visible_gpus

    if args.workers is None and not visible_gpus():
        args.workers = max(1, min(os.cpu_count() or 1, MAX_CPU_WORKERS))


def search_problem(args, prepared: Prepared, out: Path):
    """The engine problem of a tracker search into ``out`` (the baseline trained there first)."""
    data_root, baseline = materialise(args, prepared, out)
    problem = tracking_problem(prepared.name, prepared.settings, data_root, baseline, prepared.stages,
                               prepared.splits)
    default_workers(args)
    _say(args, f"searching the neck cell: MOS {prepared.stages.mos_steps} steps on {prepared.splits['verify']}/ and AO "
               f"on its first {prepared.stages.mos_sequences} sequences; proxy {prepared.settings.steps} steps on "
               f"{prepared.splits['weights']}/, AO on {prepared.splits['holdout']}/; {args.workers or 'one per GPU'} "
               "worker(s)")
    return problem, {"tracker": prepared.name, "space": SPACE_NAME}


def evaluated_counts(store, stages) -> str:
    """How many cells were bred, trained on each stage and ranked (the baseline not counted)."""
    searched = {row.id for row in store.candidates() if row.generation >= 0}
    parts = [f"{len(searched)} cells bred"]
    for stage in stages:
        done = sum(1 for v in store.verdicts(gate=stage.name) if v.candidate_id in searched and v.status == "ok")
        parts.append(f"{done} evaluated on {stage.name}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------- evaluate

DEFAULT_DEMO_RUN = "runs/demo-dimp_small-cse-seed0"


def _cells_from_run(run_dir: str, top: int) -> list[tuple[str, str]]:
    from autoloss.engine.runs import open_run
    from autoloss.engine.store import BASELINE_GENERATION

    record = open_run(run_dir)
    if record.kind != "cell":
        raise UserError(f"{run_dir} is a run of kind '{record.kind}', not a cell search (--tracker)")
    best = [(row, verdict) for row, verdict in record.best(record.ranking, top + 1) if row.generation != BASELINE_GENERATION]
    if not best:
        raise UserError(f"{run_dir} holds no cell with a proxy result yet")
    return [(f"found #{rank} (AO {verdict.metrics['fitness']:.3f} on the proxy)", row.genotype)
            for rank, (row, verdict) in enumerate(best[:top], 1)]


def random_cell(seed: int = 0) -> str:
    """A random cell that passes the structure gate (seeded: the same one every time)."""
    from autoloss.cell.breeding import random_genotype
    from autoloss.cell.gates import StructureGate
    from autoloss.cell.genotype import format_genotype

    rng = random.Random(seed)
    while True:
        cell = random_genotype(rng)
        if StructureGate().evaluate([cell])[0].passed:
            return format_genotype(cell)


def evaluate_variants(args) -> list[tuple[str, str]]:
    """(row name, neck spec): the hand neck, a random cell, then the found or given cells (parsed)."""
    from autoloss.cell.genotype import format_genotype, parse_genotype

    given = []
    for index, text in enumerate(args.cell or [], 1):
        given.append((f"cell {index}", format_genotype(parse_genotype(text))))
    run = args.run
    if run is None and not given and args.demo and (Path(DEFAULT_DEMO_RUN) / "run.sqlite").is_file():
        run = DEFAULT_DEMO_RUN
    if run is not None:
        given = _cells_from_run(run, args.top) + given
    if not given:
        raise UserError("nothing to compare: give --run RUN_DIR (its best --top cells) or --cell GENOTYPE"
                        + (f" (the demo looks for {DEFAULT_DEMO_RUN}: run `autoloss search --tracker dimp_small "
                           "--demo` first)" if args.demo else ""))
    return [("hand neck (baseline)", "hand"), ("random cell", random_cell(args.seed))] + given


def _run_demo_data(run: str | None, settings) -> tuple[Path, Path] | None:
    """A demo search run's data and baseline, when they match these settings (so evaluate need not retrain)."""
    from autoloss.tracking.train import baseline_matches

    if run is None:
        return None
    try:
        from autoloss.engine.runs import open_run

        task = open_run(run).config.get("task") or {}
    except UserError:
        return None
    data, baseline = task.get("data_root"), task.get("baseline")
    if not data or not baseline or task.get("settings") != settings.to_dict():
        return None
    if (Path(data) / "weights" / "list.txt").is_file() and baseline_matches(settings, data, baseline):
        return Path(data), Path(baseline)
    return None


def run_evaluate(args) -> int:
    from autoloss.commands.options import writable_dir
    from autoloss.engine.executors import Job, make_executor
    from autoloss.tracking.problem import evaluate

    if args.detector:
        raise UserError("choose one of --detector and --tracker")
    for option in ("loss_cls", "loss_reg", "space_cls", "iters", "batch_size"):
        if getattr(args, option, None) is not None:
            raise UserError(f"--{option.replace('_', '-')} applies to --detector, not to --tracker")
    _check_common(args, "evaluation")
    variants = evaluate_variants(args)
    prepared = prepare(args)
    out = writable_dir(Path(args.out or f"runs/evaluate-{'demo-' if args.demo else ''}{args.tracker}"),
                       "output directory")
    reuse = _run_demo_data(args.run or (DEFAULT_DEMO_RUN if args.demo else None), prepared.settings) \
        if args.demo else None
    if reuse is not None:
        data_root, baseline = reuse
        _say(args, f"re-using the demo search's data {data_root} and baseline tracker {baseline}")
    else:
        data_root, baseline = materialise(args, prepared, out)
    problem = tracking_problem(prepared.name, prepared.settings, data_root, baseline, prepared.stages, prepared.splits)
    seeds = list(range(args.seeds))
    default_workers(args)
    jobs = [(name, spec, seed) for name, spec in variants for seed in seeds]
    _say(args, f"evaluate: {len(variants)} necks x {len(seeds)} seed(s), each trained {prepared.settings.steps} steps "
               f"on {prepared.splits['weights']}/ and tracked on {prepared.splits['test']}/; {args.workers} worker(s)")
    results: dict[tuple[str, int], dict] = {}
    executor = make_executor(args.executor, workers=args.workers, address=args.address, start_method="spawn")
    try:
        stream = executor.stream((Job(evaluate, problem.task, spec, "test", seed) for _, spec, seed in jobs),
                                 args.timeout or problem.timeouts["test"])
        for index, _, outcome in stream:
            name, spec, seed = jobs[index]
            if outcome.ok:
                results[(name, seed)] = outcome.value
                _say(args, f"  {name} seed {seed}: AO {outcome.value['ao']:.3f} ({outcome.seconds:.0f} s)")
            else:
                results[(name, seed)] = {"error": outcome.error or outcome.status}
                _say(args, f"  {name} seed {seed}: failed: {outcome.error or outcome.status}")
    finally:
        executor.close()
    table = result_table(variants, seeds, results)
    text = evaluate_markdown(prepared, variants, seeds, table, data_root)
    (out / "evaluate.md").write_text(text, encoding="utf-8")
    (out / "evaluate.json").write_text(json.dumps(
        {"tracker": prepared.name, "seeds": seeds, "variants": [{"name": n, "neck": s} for n, s in variants],
         "results": [{"name": n, "seed": s, **r} for (n, s), r in results.items()]}, indent=2) + "\n", encoding="utf-8")
    print()
    print("\n".join(table))
    ok = sum(1 for r in results.values() if "error" not in r)
    print(f"\n{ok}/{len(jobs)} runs finished; table written to {out / 'evaluate.md'}")
    return 0


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def result_table(variants, seeds, results) -> list[str]:
    """The Markdown table: AO, SR0.5, SR0.75 as mean ± standard deviation over the seeds."""
    lines = ["| neck | AO | SR0.5 | SR0.75 | seeds ok |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, _ in variants:
        ok = [results[(name, s)] for s in seeds if (name, s) in results and "error" not in results[(name, s)]]
        cells = [_mean_std([r[key] for r in ok]) for key in ("ao", "sr50", "sr75")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(ok)}/{len(seeds)} |")
    return lines


def evaluate_markdown(prepared: Prepared, variants, seeds, table, data_root) -> str:
    s = prepared.settings
    lines = [f"# Tracker evaluation: {prepared.name}", "",
             f"Each neck replaces the hand-designed one in the baseline tracker (ResNet-{s.depth} backbone and size head "
             f"frozen, as in the search); adapters, neck and classifier are trained {s.steps} steps of batch {s.batch} "
             f"(Adam, lr {s.lr}) on `{prepared.splits['weights']}/` with seeds {', '.join(map(str, seeds))}, then "
             f"tracked one pass (OPE) over `{prepared.splits['test']}/` of `{data_root}`. GOT-10k metrics: AO, "
             "SR0.5, SR0.75, mean ± standard deviation over the seeds.", "", *table, "", "## Necks", ""]
    for name, spec in variants:
        lines += [f"- **{name}**: `{spec}`"]
    return "\n".join(lines) + "\n"
