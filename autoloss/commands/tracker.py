"""The tracker side of the command line: ``autoloss search --tracker`` and ``autoloss evaluate --tracker``.

Everything a user can get wrong (options, the data folders, the boxes, the frames, the backbone
checkpoint, genotype strings) is checked here before anything is trained, each problem one
:class:`~autoloss.errors.UserError` line (exit 2). The tables are :mod:`autoloss.tracking.evaluate`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from autoloss.cell.genotype import format_genotype, parse_genotype
from autoloss.cell.random_cell import random_cell
from autoloss.engine.executors import Job, make_executor, visible_gpus
from autoloss.engine.runs import open_run
from autoloss.engine.store import BASELINE_GENERATION
from autoloss.errors import UserError
from autoloss.files import writable_dir, write_atomic
from autoloss.tracking.evaluate import evaluate_markdown, result_table, reusable_demo_data
from autoloss.tracking.problem import (BASELINE_FILE, ROLES, StageSettings, apply_options, carve_download, check_data,
                                       evaluate, is_got10k_download, resolve_splits, tracker, tracking_problem,
                                       usable_frames)

LOSS_OPTIONS = ("branch", "space", "proxy_iters", "mos_iters", "batch_size", "steps", "iou")
SPACE_NAME = "DARTS cell: 4 nodes of 2 edges, 8 operations"
MAX_CPU_WORKERS = 8
DEFAULT_DEMO_RUN = "runs/demo-dimp_small-cse-seed0"


@dataclass
class Prepared:
    """A tracker search or evaluation, checked: the settings, the stages and the data's folders."""

    name: str
    settings: object  # TrackingSettings
    stages: StageSettings
    data_root: Path | None  # None: the demo's, generated into the run directory
    splits: dict  # role -> folder of data_root (a GOT-10k download's until :func:`carve` replaces both)


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
    if getattr(args, "pretrain_backbone", None) is not None:
        raise UserError("--pretrain-backbone applies to detector searches, not to --tracker")
    _check_common(args, "search")


def check_checkpoint(settings, path: str) -> str:
    """The checkpoint's resolved path, once a backbone of the settings' depth has loaded it (or one line)."""
    from autoloss.tracking.backbone import TrackingBackbone, load_backbone_checkpoint  # heavy: torch

    resolved = Path(path).expanduser().resolve()
    load_backbone_checkpoint(TrackingBackbone(settings.depth, settings.base_channels), resolved)
    return str(resolved)


def prepare(args) -> Prepared:
    """Settings (with --tracker-option and --backbone-checkpoint) and the checked data, before anything is written."""
    spec = tracker(args.tracker)
    settings, stages = apply_options(spec.settings, StageSettings(), getattr(args, "tracker_option", None))
    if args.backbone_checkpoint:
        settings = dataclasses.replace(settings, backbone_checkpoint=check_checkpoint(settings, args.backbone_checkpoint))
    from autoloss.tracking.train import check_memory  # heavy: torch (the settings' module imports it already)

    check_memory(settings, default_workers(getattr(args, "workers", None)), stages.mos_steps)
    data_root, splits = None, {role: role for role in ROLES}
    if not args.demo:
        data_root = Path(args.data).expanduser().resolve()
        splits = resolve_splits(data_root)
        check_data(data_root, splits)
    return Prepared(args.tracker, settings, stages, data_root, splits)


def check_differentiable_data(prepared: Prepared, holdout_batches: int) -> None:
    """What a differentiable search needs of the data, checked before anything is written: an
    architecture split (alpha trains on it; written only into a synthetic data set, as
    :func:`autoloss.tracking.supernet_model.prepare_architecture_split` does), and --holdout-batches
    bounded by the data: at most one batch per frame of the hold-out split with the target visible
    (more only re-draws the same frames, and each costs the backbone's maps of its crops first)."""
    if prepared.data_root is not None:
        from autoloss.tracking.dataset import read_sequences

        root = prepared.data_root
        folder = prepared.splits.get("architecture", "architecture")
        if (root / folder / "list.txt").is_file():
            if not any(usable_frames(s) >= 2 for s in read_sequences(root, folder, check_frames=False)):
                raise UserError(f"{root / folder}: no sequence has two frames with the target visible (alpha trains "
                                "on pairs of frames of this split)")
        elif folder != "architecture" or not (root / "weights" / "synthetic.json").is_file():
            raise UserError(f"a differentiable search needs an 'architecture' split: {root / folder} holds no list.txt "
                            "(alpha is trained on it, the weights on 'weights'; only a synthetic data set gets one "
                            "written)")
    check_holdout_batches(prepared, holdout_batches)


def check_holdout_batches(prepared: Prepared, batches: int) -> None:
    """--holdout-batches bounded by the data (see :func:`check_differentiable_data`)."""
    if prepared.data_root is None:  # the demo's: generated from the settings
        frames = prepared.settings.holdout_sequences * prepared.settings.sequence_frames
        where = f"the demo's hold-out split ({prepared.settings.holdout_sequences} sequences of " \
                f"{prepared.settings.sequence_frames} frames)"
    else:
        from autoloss.tracking.dataset import read_sequences

        folder = prepared.splits["holdout"]
        frames = sum(usable_frames(s) for s in read_sequences(prepared.data_root, folder, check_frames=False))
        where = f"{prepared.data_root / folder} ({frames} frames with the target visible)"
    if batches > frames:
        raise UserError(f"--holdout-batches {batches} is more than the {frames} distinct hold-out batches of {where}: "
                        f"give at most {frames}")


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def carve(prepared: Prepared, out: Path, quiet: bool = False) -> None:
    """A GOT-10k download: its verify, hold-out and architecture sequences carved out of train/ (seeded by
    the settings' ``data_seed``) into OUT/splits, val/ kept for the test; ``prepared`` then reads those."""
    if prepared.data_root is None or not is_got10k_download(prepared.splits):
        return
    download = prepared.data_root
    prepared.data_root, prepared.splits = carve_download(download, out, prepared.settings.data_seed)
    counts = {role: len((prepared.data_root / role / "list.txt").read_text(encoding="utf-8").split())
              for role in prepared.splits}
    _say(quiet, f"GOT-10k download {download}: " + ", ".join(f"{counts[role]} {role}" for role in prepared.splits)
                + f" sequences (test = val/, the rest carved out of train/ with seed {prepared.settings.data_seed}), "
                f"listed in {prepared.data_root}")


def materialise(prepared: Prepared, out: Path, quiet: bool = False,
                baseline_path: Path | None = None) -> tuple[Path, Path]:
    """The data root (the demo's generated under OUT/data; a GOT-10k download's carved into OUT/splits) and
    the trained (or re-used) baseline checkpoint."""
    import torch  # heavy: torch

    from autoloss.tracking.train import prepare_synthetic_data, train_baseline  # heavy: torch

    carve(prepared, out, quiet)
    settings = prepared.settings
    data_root = prepared.data_root
    if data_root is None:
        data_root = out / "data"
        start = time.perf_counter()
        prepare_synthetic_data(settings, data_root)
        counts = check_data(data_root, prepared.splits)
        _say(quiet, f"demo: synthetic GOT-10k-layout sequences in {data_root} ("
                    + ", ".join(f"{counts[r]} {r}" for r in ROLES) + f", {settings.sequence_frames} frames of "
                    f"{settings.frame_size} px; {time.perf_counter() - start:.0f} s)")
    baseline = baseline_path or out / BASELINE_FILE
    start = time.perf_counter()
    _say(quiet, f"baseline tracker {prepared.name} (hand-designed neck): ResNet-{settings.depth}, C = {settings.channels}, "
                f"{settings.crop_size} px crops, {settings.baseline_steps} training steps (re-used from {baseline} "
                "when it matches)")
    on_device = dataclasses.replace(settings, device="cuda" if torch.cuda.is_available() else "cpu")
    train_baseline(on_device, data_root, baseline, log=None if quiet else (lambda line: print("  " + line, flush=True)),
                   split=prepared.splits["weights"])
    _say(quiet, f"baseline tracker ready in {time.perf_counter() - start:.0f} s: {baseline}")
    return data_root, baseline


def default_workers(workers: int | None) -> int | None:
    """``workers`` if given; else one per core without GPUs (each runs one torch thread), None (one per GPU) with."""
    if workers is None and not visible_gpus():
        return max(1, min(os.cpu_count() or 1, MAX_CPU_WORKERS))
    return workers


def search_problem(prepared: Prepared, out: Path, workers: int | None, quiet: bool = False):
    """The engine problem of a tracker search into ``out`` (the baseline trained there first), and its extra config."""
    data_root, baseline = materialise(prepared, out, quiet)
    problem = tracking_problem(prepared.name, prepared.settings, data_root, baseline, prepared.stages,
                               prepared.splits)
    _say(quiet, f"searching the neck cell: MOS {prepared.stages.mos_steps} steps on {prepared.splits['verify']}/ and AO "
                f"on its first {prepared.stages.mos_sequences} sequences; proxy {prepared.settings.steps} steps on "
                f"{prepared.splits['weights']}/, AO on {prepared.splits['holdout']}/; {workers or 'one per GPU'} "
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


def _cells_from_run(run_dir: str, top: int) -> list[tuple[str, str]]:
    record = open_run(run_dir)
    if record.kind != "cell":
        raise UserError(f"{run_dir} is a run of kind '{record.kind}', not a cell search (--tracker)")
    best = [(row, sample) for row, _, sample in record.standing() if row.generation != BASELINE_GENERATION]
    if not best:
        raise UserError(f"{run_dir} holds no cell with a proxy result yet")
    cells = []
    for rank, (row, sample) in enumerate(best[:top], 1):  # the search summary's order: retrained cells first
        try:  # checked before anything is trained, as --cell is
            genotype = format_genotype(parse_genotype(row.genotype))
        except UserError as exc:
            raise UserError(f"{run_dir}: its found cell #{rank} (candidate {row.id}) does not parse: {exc}") from None
        score = (f"proxy AO {sample.mean:.3f} ± {sample.sd:.3f} over {sample.n} seeds" if sample.n > 1
                 else f"proxy AO {sample.mean:.3f}, one seed")
        cells.append((f"found #{rank} ({score})", genotype))
    return cells


def evaluate_variants(args) -> list[tuple[str, str]]:
    """(row name, neck spec): the hand neck, a random cell, then the found or given cells (parsed)."""
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


def run_evaluate(args) -> int:
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
    reuse = reusable_demo_data(args.run or (DEFAULT_DEMO_RUN if args.demo else None), prepared.settings) \
        if args.demo else None
    if reuse is not None:
        data_root, baseline = reuse
        _say(args.quiet, f"re-using the demo search's data {data_root} and baseline tracker {baseline}")
    else:
        data_root, baseline = materialise(prepared, out, args.quiet)
    problem = tracking_problem(prepared.name, prepared.settings, data_root, baseline, prepared.stages, prepared.splits)
    seeds = list(range(args.seeds))
    workers = default_workers(args.workers)
    jobs = [(name, spec, seed) for name, spec in variants for seed in seeds]
    _say(args.quiet, f"evaluate: {len(variants)} necks x {len(seeds)} seed(s), each trained {prepared.settings.steps} "
                     f"steps on {prepared.splits['weights']}/ and tracked on {prepared.splits['test']}/; {workers} "
                     "worker(s)")
    results: dict[tuple[str, int], dict] = {}
    executor = make_executor(args.executor, workers=workers, address=args.address, start_method="spawn")
    try:
        stream = executor.stream((Job(evaluate, problem.task, spec, "test", seed) for _, spec, seed in jobs),
                                 args.timeout or problem.timeouts["test"])
        for index, _, outcome in stream:
            name, spec, seed = jobs[index]
            if outcome.ok:
                results[(name, seed)] = outcome.value
                _say(args.quiet, f"  {name} seed {seed}: AO {outcome.value['ao']:.3f} ({outcome.seconds:.0f} s)")
            else:
                results[(name, seed)] = {"error": outcome.error or outcome.status}
                _say(args.quiet, f"  {name} seed {seed}: failed: {outcome.error or outcome.status}")
    finally:
        executor.close()
    table = result_table(variants, seeds, results)
    text = evaluate_markdown(prepared.name, prepared.settings, prepared.splits, variants, seeds, table, data_root)
    write_atomic(out / "evaluate.md", text)
    write_atomic(out / "evaluate.json", json.dumps(
        {"tracker": prepared.name, "seeds": seeds, "variants": [{"name": n, "neck": s} for n, s in variants],
         "results": [{"name": n, "seed": s, **r} for (n, s), r in results.items()]}, indent=2) + "\n")
    print()
    print("\n".join(table))
    ok = sum(1 for r in results.values() if "error" not in r)
    print(f"\n{ok}/{len(jobs)} runs finished; table written to {out / 'evaluate.md'}")
    return 0
