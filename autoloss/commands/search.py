"""``autoloss search``: evolve losses on a detector or a cheap task, or the neck cell of a tracker,
into a resumable run store.

Every option is checked before anything is written: the run directory and its store are created
only once the search can start (a tracker's data, checkpoint and settings are checked before its
baseline is trained). The defaults are those of the strategies' options dataclasses (shown in
``--help``); ``--demo`` overrides the budget with :data:`DEMO_BUDGET` (:data:`DEMO_TRACKING_BUDGET`
for a tracker) unless an option is given explicitly.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from autoloss.commands import tracker as tracking
from autoloss.commands.options import bounded_int, finite_float, finite_positive
from autoloss.differentiable.strategies import CLI_OPTIONS, DEMO_BUDGET as DEMO_DIFFERENTIABLE, is_differentiable
from autoloss.detection.presets import PRESETS
from autoloss.engine import registry
from autoloss.engine.confirmation import ConfirmSettings, outcome_lines
from autoloss.engine.evidence import method_text
from autoloss.engine.executors import make_executor
from autoloss.engine.lock import RunLock
from autoloss.engine.progress import Progress
from autoloss.engine.schedulers import SCHEDULERS
from autoloss.engine.store import RunStore, StoreError, check_metrics
from autoloss.engine.study import Study, check_resume, restored_options, run_config
from autoloss.errors import UserError
from autoloss.files import exists, writable_dir
from autoloss.strategies.cse import MOS_THRESHOLDS, CseOptions
from autoloss.strategies.evolution import EvolutionOptions

DEMO_BUDGET = {"population": 24, "generations": 2, "top_k": 2, "parents": 2, "max_mos": 4}
DEMO_ITERS = {"proxy_iters": 200, "mos_iters": 30}
DEMO_DETECTORS = {"faster_rcnn": "faster_rcnn_small", "fcos": "fcos_small"}
# the demo's synthetic data: the "clutter" preset (where the loss matters: docs/benchmarks.md, proxy reliability)
# and a held-out test split for autoloss evaluate --demo
DEMO_DATA = {**PRESETS["clutter"], "num_test": 64}
# The tracking demo: 2 workers on 2 cores, MOS a few seconds, a proxy about 20 s.
DEMO_TRACKING_BUDGET = {"population": 10, "generations": 4, "top_k": 3, "parents": 3, "mos_margin": 0.02}
# The demo's confirmation: the best candidate, seeds 0 to 4 (4 fresh), 4 proxy runs: two rounds of 2 on 2 cores
# (~4 min for the detector demo). One candidate with 4 fresh seeds tests more sharply than two with 3 each (the
# family of Holm's adjustment is smaller, the sample larger) and costs one round less, within the 15 minutes.
DEMO_CONFIRM = {"confirm_top": 1, "confirm_seeds": 5, "confirm_budget": 4}
# The baseline's seeds on the ranking stage (the proxy's noise): detectors and trackers are noisy (the demo
# detector's AP varies by several points between seeds). noisy-digits: see NOISY_DIGITS_BASELINE_SEEDS.
BASELINE_SEEDS = 3
# noisy-digits: its baseline's accuracy over seeds 0..4 was 0.756 ± 0.028 sd (docs/benchmarks.md, "Proxy
# noise"; one seed at 0.706), against 0.17 between the means of CE and the MAE-like loss: small beside
# the best losses' lead, but as large as the differences between good losses, so not negligible: 3 seeds,
# which cost 2 more proxy runs of about 2 s each.
NOISY_DIGITS_BASELINE_SEEDS = 3
MAX_WORKERS = 256
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds must fit

_D = CseOptions()  # the defaults shown in --help come from the options dataclasses


def add_parser(commands) -> argparse.ArgumentParser:
    search = commands.add_parser(
        "search", help="evolve losses (CSE-Autoloss, or the random / vanilla-evolution baselines)",
        description="Evolve loss functions. Every candidate and verdict goes to RUN_DIR/run.sqlite as soon "
                    "as it is known; --resume continues a killed run where it stopped.")
    target = search.add_argument_group("what to search")
    target.add_argument("--detector", help="an MMDetection proxy detector: faster_rcnn, fcos (R50-FPN, as in "
                                           "the paper), faster_rcnn_small, fcos_small (ResNet-18, 128 px, for "
                                           "CPUs), or the path of your own MMDetection config")
    target.add_argument("--branch", choices=["cls", "reg"],
                        help="the loss to search; the other keeps the config's (GIoU; CE or FL) (default: cls)")
    target.add_argument("--data", help="COCO-format dataset: annotations/instances_{train,val}*.json and the "
                                       "image folders (without a val split, one is carved out of train); for "
                                       "--tracker a root of GOT-10k-layout folders weights/ (training), verify/ "
                                       "(MOS), holdout/ (the proxy's AO), test/ (autoloss evaluate), or a "
                                       "GOT-10k download (train/ as weights, val/ for the rest)")
    target.add_argument("--demo", action="store_true",
                        help="generate a synthetic dataset and run a small search on the CPU variant of "
                             "--detector (about 12 minutes on 2 cores), or of --tracker dimp_small (synthetic "
                             "GOT-10k-layout sequences, the baseline tracker trained first; under 15 minutes)")
    target.add_argument("--task", choices=["noisy-digits"], help="a cheap built-in proxy task instead of a detector")
    target.add_argument("--tracker", choices=["dimp_small", "dimp_r50"],
                        help="search the neck cell of a DiMP-style tracker (CHASE): dimp_small (ResNet-18, CPU) "
                             "or dimp_r50 (ResNet-50, GPUs; needs --backbone-checkpoint)")
    target.add_argument("--backbone-checkpoint", metavar="FILE",
                        help="ResNet weights the backbone starts from (ImageNet, MMDetection or pytracking "
                             "layout): --tracker's baseline tracker (required for dimp_r50), or --detector's "
                             "(checked to fit before anything trains; default: the config's, from scratch)")
    target.add_argument("--tracker-option", action="append", metavar="KEY=VALUE",
                        help="--tracker: override one tracking setting (autoloss.tracking.train.TrackingSettings, "
                             "e.g. steps=200, or mos_steps / mos_sequences); repeatable")
    target.add_argument("--space", help="search space name or YAML file (default: cls_softmax or cls_sigmoid "
                                        "after the detector's head, reg)")
    iters = bounded_int("--proxy-iters", 1, 10**9)
    target.add_argument("--proxy-iters", type=iters,
                        help="proxy training iterations (default: one epoch of the training split)")
    target.add_argument("--mos-iters", type=bounded_int("--mos-iters", 1, 10**9),
                        help="model optimisation simulation iterations on D_verify (default: 30)")
    target.add_argument("--batch-size", type=bounded_int("--batch-size", 1, 65536),
                        help="training images per iteration (default: the config's)")
    target.add_argument("--pretrain-backbone", action=argparse.BooleanOptionalAction,
                        help="start the backbone from a ResNet pretrained on the training split's objects "
                             "(a minute or two on a CPU, once: cached in the run directory, retrained only when "
                             "the data changes); the paper starts from ImageNet weights (default: on for --demo "
                             "without --backbone-checkpoint, off otherwise)")
    target.add_argument("--steps", type=bounded_int("--steps", 1, 10**7),
                        help="--task only: proxy training steps (task default if omitted)")
    target.add_argument("--iou", choices=["one", "confidence"],
                        help="--task only: the IoU stand-in W, 1 for every sample or the model's detached "
                             "probability of the label (default: one)")
    evo = search.add_argument_group("evolution (the paper's Algorithm 1)")
    evo.add_argument("--strategy", choices=sorted(registry.strategies()), default="cse")
    evo.add_argument("--mode", choices=list(SCHEDULERS), default="generational")
    count = bounded_int("count", 1, 1_000_000)
    evo.add_argument("--population", type=count, help=f"N, candidates per generation (default: {_D.population})")
    evo.add_argument("--generations", type=count, help=f"E (default: {_D.generations})")
    evo.add_argument("--top-k", type=count, help=f"cse: K, MOS survivors sent to the proxy (default: {_D.top_k})")
    evo.add_argument("--parents", type=count,
                     help=f"P, parents of the next generation (default: {_D.parents} for cse, "
                          f"{EvolutionOptions().parents} otherwise)")
    evo.add_argument("--crossover", type=finite_float("--crossover", 0, 1), help=f"p1 (default: {_D.crossover})")
    evo.add_argument("--mutation", type=finite_float("--mutation", 0, 1), help=f"p2 (default: {_D.mutation})")
    evo.add_argument("--mos-margin", type=finite_float("--mos-margin", 0),
                     help=f"cse: pass MOS at >= threshold - margin (default: {_D.mos_margin})")
    evo.add_argument("--mos-reference", choices=["baseline", "initial"],
                     help="cse: the first generation's MOS threshold is the baseline's score or that of the initial "
                          "individual breeding starts from (default: baseline; initial for --tracker, whose "
                          "baseline is the hand neck)")
    evo.add_argument("--mos-threshold", choices=list(MOS_THRESHOLDS),
                     help="cse: later generations' MOS threshold: the previous best loss's MOS score (the paper's rule) "
                          f"or the first generation's all along (default: {_D.mos_threshold})")
    evo.add_argument("--mos-quantile", type=finite_float("--mos-quantile", 0, 0.999999),
                     help="cse: also pass only MOS scores at or above this quantile of the generation's (default: off)")
    evo.add_argument("--distinct", action=argparse.BooleanOptionalAction, default=None,
                     help="cse: send no near-clone of a candidate already sent to the proxy (same predictions after "
                          "the MOS, where the task reports them) and breed from parents of distinct behaviour "
                          f"(default: {'on' if _D.distinct else 'off'})")
    evo.add_argument("--max-mos", type=count, help="cse: at most this many MOS runs per generation (default: all)")
    evo.add_argument("--max-evaluations", type=count,
                     help="stop once this many proxy evaluations are stored (default: no cap)")
    evo.add_argument("--seed", type=bounded_int("--seed", 0, MAX_SEED), default=0)
    sure = search.add_argument_group("evidence (how sure the search is: seeds, confirmation)")
    sure.add_argument("--baseline-seeds", type=bounded_int("--baseline-seeds", 1, 1000),
                      help=f"seeds of the baseline on the ranking stage: the proxy's noise, stored and shown "
                           f"(default: {BASELINE_SEEDS})")
    sure.add_argument("--confirm-top", type=bounded_int("--confirm-top", 0, 1000),
                      help="before the search ends, retrain this many of the best candidates with fresh seeds, as a "
                           "race; 0 turns confirmation off (default: 3; --demo: 1)")
    sure.add_argument("--confirm-seeds", type=bounded_int("--confirm-seeds", 1, 1000),
                      help="seeds per confirmed candidate at most, the one that ranked it included (default: 5; "
                           "--demo: 5); a claim of 'better' needs 3 fresh ones")
    sure.add_argument("--confirm-budget", type=bounded_int("--confirm-budget", 1, 1_000_000),
                      help="confirmation evaluations at most (default: top x (seeds - 1); --demo: 4)")
    sure.add_argument("--confirm-every-generation", action="store_true",
                      help="also confirm after each generation (generational mode), so the next parents and MOS "
                           "bar come from confirmed means")
    diff = search.add_argument_group("differentiable search (--strategy darts, darts2, ms-darts; --tracker)")
    diff.add_argument("--epochs", type=count, help="epochs per seed (default: 70, CHASE's)")
    diff.add_argument("--seeds", type=count, help="independent searches, one worker each; the winner by hold-out "
                                                  "loss (default: 3)")
    diff.add_argument("--warmup", type=finite_float("--warmup", 0, 0.999),
                      help="share of the epochs before alpha is updated (default: 10/70)")
    diff.add_argument("--skip-dropout", type=finite_float("--skip-dropout", 0, 0.999),
                      help="dropout after skip connections at the first epoch, decaying to 0 (default: 0.6)")
    diff.add_argument("--patience", type=count, help="stop a seed after this many epochs without a new hold-out "
                                                     "minimum (default: 10)")
    diff.add_argument("--steps-per-epoch", type=count, help="weight and architecture steps per epoch "
                                                            "(default: the tracker's pool)")
    diff.add_argument("--holdout-batches", type=count, help="hold-out batches per epoch's losses (default: 8)")
    diff.add_argument("--weight-lr", type=finite_positive("--weight-lr"), help="Adam on the weights (default: "
                                                                                "the tracker's lr)")
    diff.add_argument("--weight-schedule", choices=["cosine", "constant"],
                      help="the weights' learning rate over the epochs: cosine annealing to 0 (CHASE's paper) or "
                           "constant (default: cosine; a run stored before this option existed resumes with "
                           "--weight-schedule constant)")
    diff.add_argument("--arch-lr", type=finite_positive("--arch-lr"), help="Adam on alpha (default: 3e-4)")
    diff.add_argument("--eigenvalue", action=argparse.BooleanOptionalAction, default=None,
                      help="log the largest eigenvalue of the architecture loss's Hessian in alpha per epoch "
                           "(exact, eval mode; default: on)")
    diff.add_argument("--share-gradient", action=argparse.BooleanOptionalAction, default=None,
                      help="darts2: one weight gradient for the virtual and the real weight step, 4 passes per "
                           "iteration instead of 5 (default: on)")
    diff.add_argument("--proxy", choices=["seeds", "winner"], help="which chosen cells are retrained on the "
                                                                    "proxy (default: each seed's)")
    diff.add_argument("--epoch-timeout", type=finite_positive("--epoch-timeout"),
                      help="seconds per epoch of one seed (default: 6 hours)")
    diff.add_argument("--ms-eps", type=finite_positive("--ms-eps"), help="ms-darts: sampling radius (default: 0.25)")
    diff.add_argument("--ms-h", type=finite_positive("--ms-h"), help="ms-darts: kernel bandwidth (default: 1)")
    diff.add_argument("--ms-samples", type=count, help="ms-darts: N samples (default: 3)")
    diff.add_argument("--ms-iterations", type=count, help="ms-darts: T iterations (default: 2)")
    diff.add_argument("--ms-temperature", type=finite_positive("--ms-temperature"),
                      help="ms-darts: temperature of the samples' loss softmax (default: 1)")
    run = search.add_argument_group("running")
    run.add_argument("--executor", choices=["local", "ray"], default="local")
    run.add_argument("--workers", type=bounded_int("--workers", 1, MAX_WORKERS),
                     help="parallel evaluations (default: one per GPU, else 1)")
    run.add_argument("--address", help="Ray cluster address (default: start a local one)")
    run.add_argument("--mos-timeout", type=finite_positive("--mos-timeout"),
                     help="cse: seconds per MOS evaluation (default: 1 hour for a detector, 600 for --task)")
    run.add_argument("--proxy-timeout", type=finite_positive("--proxy-timeout"),
                     help="seconds per proxy evaluation (default: 24 hours for a detector, whose proxy is an "
                          "epoch; 3600 for --task)")
    run.add_argument("--out", help="run directory (default: runs/[demo-]<detector or task>-<branch>-<strategy>-seed<seed>, "
                                   "runs/[demo-]<tracker>-<strategy>-seed<seed>)")
    run.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    search.set_defaults(handler=run_search)
    return search


def strategy_options(args: argparse.Namespace, stored: dict | None = None):
    """The strategy with its options from the command line (the --demo budget where not given). ``stored``:
    the options of the run being resumed, which those not given keep (an option the run predates: the
    value it behaved as), so a changed default never stops a resume."""
    cls = registry.strategy(args.strategy)
    names = {f.name for f in fields(cls.Options)}
    cli_names = {f.name for f in fields(CseOptions)} | {"max_evaluations"} | set(CLI_OPTIONS)
    given = {name: getattr(args, name) for name in cli_names if getattr(args, name, None) is not None}
    for name in given:
        if name not in names:
            raise UserError(f"--{name.replace('_', '-')} does not apply to --strategy {args.strategy}")
    if is_differentiable(args.strategy) and not getattr(args, "tracker", None):
        raise UserError(f"--strategy {args.strategy} searches a tracker's neck cell: add --tracker dimp_small")
    if args.demo:
        budget = DEMO_TRACKING_BUDGET if getattr(args, "tracker", None) else DEMO_BUDGET
        budget = DEMO_DIFFERENTIABLE if is_differentiable(args.strategy) else budget
        given = {**{k: v for k, v in budget.items() if k in names}, **given}
    if "mos_reference" in names and "mos_reference" not in given and getattr(args, "tracker", None):
        given["mos_reference"] = "initial"  # the hand neck is the baseline; breeding starts from a cell
    if stored is not None:
        restored = restored_options(cls.Options, stored)
        given = {**{name: value for name, value in restored.items() if name in names}, **given}
    if "top_k" in names and "top_k" not in given and "population" in given:
        given["top_k"] = min(_D.top_k, given["population"])  # the default K, within a small population
    return cls(cls.Options(**given))


def stored_strategy_options(args: argparse.Namespace, db: Path) -> dict | None:
    """The options of the run in ``db`` when it is resumed with the same strategy (None otherwise, or when
    they cannot be read: the resume checks then say why)."""
    if not (args.resume and db.is_file()):
        return None
    try:
        with RunStore(db, readonly=True) as store:
            config = store.load_config() or {}
    except Exception:  # a broken store is reported by the resume checks, with its reason
        return None
    options = config.get("options")
    return options if config.get("strategy") == args.strategy and isinstance(options, dict) else None


def evidence_options(args: argparse.Namespace) -> tuple[int, ConfirmSettings]:
    """The baseline's seeds and the confirmation settings from the command line (the --demo's where not given)."""
    demo = DEMO_CONFIRM if args.demo else {}
    given = {name: getattr(args, name, None) for name in ("confirm_top", "confirm_seeds", "confirm_budget")}
    given = {name: value if value is not None else demo.get(name) for name, value in given.items()}
    defaults = ConfirmSettings()
    settings = ConfirmSettings(top=defaults.top if given["confirm_top"] is None else given["confirm_top"],
                               seeds=given["confirm_seeds"] or defaults.seeds, budget=given["confirm_budget"],
                               every_generation=bool(getattr(args, "confirm_every_generation", False)))
    settings.validate()
    if settings.every_generation and (args.mode != "generational" or is_differentiable(args.strategy)):
        raise UserError("--confirm-every-generation applies to the generational mode of an evolved search")
    seeds = getattr(args, "baseline_seeds", None)
    if seeds is None:
        seeds = NOISY_DIGITS_BASELINE_SEEDS if args.task else BASELINE_SEEDS
    return seeds, settings


def run_search(args: argparse.Namespace) -> int:
    if sum(1 for target in (args.detector, args.task, args.tracker) if target) > 1:
        raise UserError("choose one of --task, --detector and --tracker")
    if args.demo and not (args.detector or args.tracker):
        raise UserError("--demo runs a detector or tracker search: add --detector faster_rcnn (or fcos), or "
                        "--tracker dimp_small")
    if not (args.task or args.detector or args.tracker):
        raise UserError("choose what to search on: --detector faster_rcnn|fcos|CONFIG (with --data DIR or "
                        "--demo), the cheap --task noisy-digits, or --tracker dimp_small|dimp_r50")
    if args.address and args.executor != "ray":
        raise UserError("--address applies to --executor ray")
    if not args.tracker:
        if getattr(args, "tracker_option"):
            raise UserError("--tracker-option applies to --tracker searches")
        if args.backbone_checkpoint and not args.detector:
            raise UserError("--backbone-checkpoint applies to --tracker and --detector searches")
    branch = args.branch or "cls"
    if args.tracker:
        name = args.tracker
        default_out = f"runs/{'demo-' if args.demo else ''}{name}-{args.strategy}-seed{args.seed}"
    else:
        name = Path(args.detector).stem if args.detector else args.task
        default_out = f"runs/{'demo-' if args.demo else ''}{name}-{branch}-{args.strategy}-seed{args.seed}"
    out = Path(args.out or default_out)
    db = out / "run.sqlite"
    strategy = strategy_options(args, stored_strategy_options(args, db))
    baseline_seeds, confirmation = evidence_options(args)
    own = getattr(strategy, "scheduler", None)  # a differentiable strategy's own scheduler
    mode = own.name if own else args.mode
    workers = args.workers
    if args.tracker:
        tracking.check_search_args(args)
        workers = tracking.default_workers(workers)
    if exists(out, "run directory") and not out.is_dir():
        raise UserError(f"cannot use {out} as the run directory: it exists and is not a directory")
    if db.exists() and not args.resume:
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    if args.resume and not db.is_file():
        raise UserError(f"nothing to resume: {db} does not exist")
    if args.resume:
        _check_resumable(db)
    if args.task:
        problem, extra = _task_problem(args, branch)
    if args.tracker:
        prepared = tracking.prepare(args)  # data, checkpoint and settings checked; nothing written
        if is_differentiable(args.strategy):
            tracking.check_differentiable_data(prepared, strategy.options.holdout_batches)
    if args.detector and args.demo and not args.data:
        from autoloss.detection.synthetic import check_folder  # numpy, PIL: only for --demo

        check_folder(out / "data")  # a folder of the user's files is refused before anything is written
    if args.tracker and args.demo:
        from autoloss.tracking.synthetic import check_folders

        check_folders(out / "data")  # the same rule for the tracking demo's data
    out = writable_dir(out)
    lock = RunLock(out).acquire()
    try:
        if args.detector:
            problem, extra = _detection_problem(args, branch, out)
        if args.tracker:
            problem, extra = tracking.search_problem(prepared, out, workers, args.quiet)
        _check_problem(problem)
        if args.resume:  # read-only: a store that cannot be resumed is left exactly as it was
            with RunStore(db, readonly=True) as stored:
                check_resume(stored, run_config(problem, strategy, args.seed, mode, extra), problem)
        store = RunStore(db)
        executor = make_executor(args.executor, workers=workers, address=args.address,
                                 start_method=problem.start_method)
        try:
            try:
                study = Study(problem, strategy, store, executor,
                              Progress(enabled=not args.quiet, metric=problem.metric, heartbeat_dir=out / "work"),
                              seed=args.seed, scheduler=mode, extra_config=extra,
                              baseline_seeds=baseline_seeds, confirmation=confirmation)
            except StoreError:
                raise
            except ValueError as exc:  # the stored config differs from these options
                raise UserError(f"cannot resume {out} with different options: {exc}") from None
            scheduler = (own or SCHEDULERS[args.mode])()
            result = scheduler.run(study, strategy)
            _print_result(result, problem, study)
            failure = None if result.baseline is not None else _baseline_failure(study)
            nothing = None if failure is not None else _search_failure(result, study, scheduler, strategy)
        finally:
            executor.close()
            store.close()
    finally:
        lock.release()
    if failure is not None:
        raise SearchFailed(f"the baseline failed, so nothing else was evaluated: {failure} "
                           f"(store: {db}; a resume retries a timeout or a crash)")
    if nothing is not None:
        raise SearchFailed(f"no candidate finished: {nothing} (store: {db})")
    return 0


class SearchFailed(UserError):
    exit_code = 1


def _check_resumable(db: Path) -> None:
    """A store to resume must be an intact run store with a config; checked read-only, untouched."""
    if db.stat().st_size == 0:
        raise UserError(f"cannot resume: {db} is empty (zero bytes), not a run store; move it away to start anew")
    try:
        with RunStore(db, readonly=True) as store:
            if store.load_config() is None:
                raise UserError(f"cannot resume: {db} holds no run config (the search never started)")
            store.candidates()
            for verdict in store.verdicts():  # the run reader's rule: metrics read as numbers are numbers
                check_metrics(verdict.metrics, f"the verdict of candidate {verdict.candidate_id} at {verdict.gate[:40]!r}")
            store.generations_summaries()
            store.states()  # the engine's state, read on resume: each value must be JSON
    except StoreError as exc:
        raise StoreError(str(exc) if str(db) in str(exc) else f"{db}: {exc}") from None


def _check_problem(problem) -> None:
    """The baseline must parse before any store is written."""
    representation = problem.representation
    try:
        individual = representation.parse(problem.baseline) if problem.baseline else representation.initial()
    except UserError as exc:
        raise UserError(f"the search space's initial individual does not parse: {exc}") from None
    representation.key(individual)


def _task_problem(args: argparse.Namespace, branch: str):
    from autoloss.loss.space import load_space  # heavy: torch, sympy
    from autoloss.tasks.problem import task_problem  # heavy: torch

    for option in ("data", "proxy_iters", "mos_iters", "batch_size"):
        if getattr(args, option) is not None:
            raise UserError(f"--{option.replace('_', '-')} applies to detector searches, not to --task")
    if args.pretrain_backbone is not None:
        raise UserError("--pretrain-backbone applies to detector searches, not to --task")
    space = load_space(args.space or {"cls": "cls_softmax", "reg": "reg"}[branch])
    if space.branch != branch:
        raise UserError(f"space '{space.name}' is a {space.branch} space, not {branch}")
    params = {key: value for key, value in (("steps", args.steps), ("iou", args.iou)) if value is not None}
    problem = task_problem(args.task, space, params or None)
    return problem, {"task_name": args.task, "space": space.name}


def pretrains(args: argparse.Namespace) -> bool:
    """Whether a detector's backbone is pretrained on the data's objects: as asked, else for the demo (its proxy
    from scratch ranks seed noise: docs/benchmarks.md, proxy reliability) unless a checkpoint is given."""
    if args.pretrain_backbone is not None:
        return bool(args.pretrain_backbone)
    return bool(args.demo) and not args.backbone_checkpoint


def _detection_problem(args: argparse.Namespace, branch: str, out: Path):
    from autoloss.detection.problem import detection_problem  # heavy: torch
    from autoloss.detection.pretrain import PretrainSettings
    from autoloss.detection.task import prepare_task  # heavy: torch

    if args.steps is not None:
        raise UserError("--steps applies to --task; a detector search takes --proxy-iters and --mos-iters")
    if args.iou is not None:
        raise UserError("--iou applies to --task; a detector computes the IoU of its own boxes")
    detector, data = args.detector, args.data
    if args.backbone_checkpoint:  # before anything is written (the full check needs the config: prepare_task)
        from autoloss.detection.pretrain import read_state_dict

        read_state_dict(args.backbone_checkpoint)
    iters = {"proxy_iters": args.proxy_iters, "mos_iters": args.mos_iters}
    if args.demo:
        from autoloss.detection.synthetic import make_synthetic_coco  # heavy: numpy, only for --demo

        if data:
            raise UserError("--demo generates its own synthetic dataset: drop --data, or drop --demo")
        detector = DEMO_DETECTORS.get(detector, detector)
        data = str(out / "data")
        iters = {k: v if v is not None else DEMO_ITERS[k] for k, v in iters.items()}
        made = make_synthetic_coco(data, **DEMO_DATA)
        if not args.quiet:
            print(f"demo: synthetic COCO dataset in {data} ({made['num_train']} train / {made['num_val']} val / "
                  f"{made['num_test']} held-out test images, {len(made['categories'])} categories, unannotated "
                  f"distractor shapes); detector {detector}")
    elif not data:
        raise UserError("a detector search needs --data DIR (a COCO-format dataset), or --demo")
    task, summary = prepare_task(detector, branch, data, out, space=args.space,
                                 proxy_iters=iters["proxy_iters"], mos_iters=iters["mos_iters"] or 30,
                                 batch_size=args.batch_size, seed=args.seed,
                                 backbone_checkpoint=args.backbone_checkpoint,
                                 pretrain=PretrainSettings() if pretrains(args) else None,
                                 progress=None if args.quiet else print)
    if not args.quiet:
        print(f"detector {Path(summary['config']).name} ({summary['kind']}), branch {branch}, "
              f"space {summary['space']}; train {summary['train_images']} / val {summary['val_images']} images"
              f"{' (val carved out of train)' if summary['carved_val'] else ''}, {summary['categories']} "
              f"categories, D_verify {summary['verify_images']} images; proxy {summary['proxy_iters']} "
              f"iterations, MOS {summary['mos_iters']} (batch {summary['batch_size']}); backbone "
              f"{summary['backbone']}")
        for note in summary["notes"]:
            print(f"note: {note}")
    return detection_problem(task), {"detector": detector, "space": summary["space"]}


def _print_result(result, problem, study) -> None:
    representation, metric = problem.representation, problem.metric
    noun = "cell" if representation.kind == "cell" else "loss"
    base = result.baseline.fitness if result.baseline else None
    seeds = getattr(study, "seed_evaluations", 0)
    extra = f" and {seeds} with further seeds (the baseline's, the confirmation's)" if seeds else ""
    print(f"\nbest {noun}{'s' if noun == 'cell' else 'es'} by {metric} ({result.proxy_evaluations} proxy evaluations"
          f"{extra} this session; store: {study.store.path})")
    if noun == "cell":
        print("  " + tracking.evaluated_counts(study.store, study.stages))
    if base is not None:
        print(f"  baseline {metric} {result.baseline.score_text}  {result.baseline.genotype}"
              + ("  (the hand-designed neck)" if noun == "cell" else ""))
        if result.baseline.seeds < 2:
            print("  (the baseline ran one seed: the proxy's noise is not measured; --baseline-seeds 3 measures it)")
    else:
        print(f"  baseline: no {metric} ({_baseline_failure(study)})")
    found = [b for b in result.best if b.generation >= 0][:5]
    if not found:
        print("  no candidate finished its proxy evaluation")
    elif base is not None and max(item.fitness for item in found) <= base:
        print(f"  no candidate beat the baseline within this budget: the baseline remains the best {noun} "
              f"(a larger --population and more --generations search further)")
    retrained = sum(item.seeds > 1 for item in found)
    claims = study.claims() if base is not None else {}  # one family for all (Holm), read once
    for rank, item in enumerate(found, 1):
        if retrained and rank == retrained + 1:
            print(f"  not retrained (one seed each: the draw that ranked them, not evidence; listed after the "
                  f"{noun}{'s' if noun == 'cell' else 'es'} retrained on fresh seeds)")
        delta = f" ({item.fitness - base:+.4f})" if base is not None else ""
        described = representation.describe(representation.parse(item.genotype))
        infix = described.get("infix") or described.get("summary", "")
        claim = claims.get(study.owner(item.candidate_id))
        said = (f"\n       {claim.text()}" if claim is not None and claim.candidate.n
                else f"\n       unconfirmed: one seed, not evidence (the proxy's noise is ± {result.baseline.sd:.4f})"
                if base is not None and result.baseline.sd is not None else "")
        print(f"  {rank}. {metric} {item.score_text}{delta}  gen {item.generation + 1}  {item.genotype}"
              + (f"\n       {infix}" if infix else "") + said)
    if result.confirmation:
        print()
        for line in outcome_lines(result.confirmation, metric):
            print("  " + line)
    if base is not None:
        print("\n" + _verdict_line(result, study, noun, metric))
        print(f"  ({method_text()})")


def _verdict_line(result, study, noun: str, metric: str) -> str:
    """The search's last word: what was confirmed better than the baseline, and with what interval."""
    outcome = result.confirmation
    if not outcome:
        if study.confirmation is None or not study.confirmation.enabled:
            return (f"not confirmed: confirmation was off (--confirm-top 0), so no {noun} is claimed better than the "
                    "baseline; each result above is one seed")
        return f"not confirmed: no searched {noun} has a proxy {metric} to confirm"
    rows = {row["id"]: row for row in outcome["candidates"]}
    confirmed = [rows[cid] for cid in outcome["confirmed"]]
    if confirmed:
        best = max(confirmed, key=lambda r: r["mean"])
        bound = best.get("bound") or (f"one-sided {100 * (1 - outcome['alpha']):.0f}% lower bound of the "
                                      f"difference {best['lower']:+.4f}")
        return f"confirmed: candidate {best['id']} {best['genotype']} is {best['claim']}; {bound}"
    winner = rows.get(outcome["winner"]) if outcome["winner"] is not None else None
    if winner is None:
        return f"not confirmed: every confirmed {noun} left the race below the baseline or the leader"
    return f"not confirmed: the best {noun} after confirmation, candidate {winner['id']}, is {winner['claim']}"


def _search_failure(result, study, scheduler, strategy) -> str | None:
    """Why a search whose baseline ran found no candidate, when that is because every evaluation failed
    (the scheduler's own account first, e.g. a differentiable search whose every epoch timed out or
    diverged); None when a candidate finished, or when nothing failed (every candidate was rejected)."""
    if any(item.generation >= 0 for item in result.best):
        return None
    account = getattr(scheduler, "failure_summary", None)
    reason = account(study, strategy) if account is not None else None
    if reason:
        return reason
    stages = {stage.name for stage in study.stages}
    searched = {row.id for row in study.store.candidates() if row.generation >= 0}
    verdicts = [v for v in study.store.verdicts() if v.candidate_id in searched and v.gate in stages]
    if not verdicts or any(v.status == "ok" for v in verdicts):
        return None
    counts: dict[str, int] = {}
    for verdict in verdicts:
        counts[verdict.status] = counts.get(verdict.status, 0) + 1
    return (f"every evaluation failed ({', '.join(f'{status} {n}' for status, n in counts.items())}), e.g. "
            f"{verdicts[0].gate}: {verdicts[0].reason[:300]}")


def _baseline_failure(study) -> str:
    row = study.baseline_row()
    if row is not None:
        for stage in reversed(study.stages):
            verdict = study.store.verdict(row.id, stage.name)
            if verdict is not None and not verdict.passed and verdict.status != "ok":
                return f"its {stage.name} evaluation failed: {verdict.reason}"
    return "it was not evaluated"
