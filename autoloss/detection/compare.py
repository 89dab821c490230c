"""A fair comparison of discovered losses against the baselines, as in the paper's Tables 6 and 7.

The detector is trained with the given losses and with the baselines (CE + GIoU and CE + L1 for a
two-stage detector, FL + GIoU for a one-stage one) under the same schedule, data and seeds, each
run in a worker process; the table reports COCO AP, AP50 and AP75 (mean over seeds, in percent) with
the difference to the reference baseline (CE + GIoU or FL + GIoU)::

    comparison = Comparison.prepare("faster_rcnn_small", data_dir, out_dir, loss_cls="CSE-Autoloss-A_cls",
                                    seeds=3, iters=500)
    results = comparison.run(executor)
    print(comparison.table(results))

Every finished run is appended to ``OUT/runs.jsonl`` at once; running the same comparison again
into the same directory redoes only the runs that are missing.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoloss.detection.coco import CocoSplits, find_test_split
from autoloss.engine import evidence
from autoloss.detection.task import (finish_run_config, output_to, require_mmdetection, scores, start_backbone_from,
                                     starting_backbone, train_and_test)
from autoloss.engine.executors import Job
from autoloss.errors import UserError
from autoloss.files import write_atomic
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.space import load_space

METRICS = (("fitness", "AP"), ("mAP_50", "AP50"), ("mAP_75", "AP75"))
# what a comparison.json written before these fields existed meant by their absence
OPTIONS_BEFORE = {"split": "val", "backbone_checkpoint": None, "backbone_prefix": None}


@dataclass(frozen=True)
class Variant:
    """One row of the table: the losses that replace the config's (None keeps the config's)."""

    name: str
    cls_loss: dict | None = None
    reg_loss: dict | None = None
    iou_aware: bool = False  # the IoU-aware head (a searched cls loss may read the IoU)
    decoded_boxes: bool = True  # two-stage: regress decoded boxes (IoU losses) or deltas (L1)
    baseline: bool = False


@dataclass(frozen=True)
class Comparison:
    """Plain data (it is written to ``OUT/comparison.json`` and sent to the workers)."""

    detector: str
    kind: str  # "two_stage" or "one_stage"
    train_ann: str
    val_ann: str
    train_img_dir: str
    val_img_dir: str
    categories: tuple
    out_dir: str
    iters: int
    batch_size: int | None
    seeds: tuple
    variants: tuple = field(default_factory=tuple)
    split: str = "val"  # what val_ann / val_img_dir hold: the validation split, or the held-out "test" split
    backbone_checkpoint: str | None = None  # every variant's backbone starts from it (None: the config's start)
    backbone_prefix: str | None = None

    @classmethod
    def prepare(cls, detector: str, data_dir, out_dir, loss_cls: str | None = None, loss_reg: str | None = None,
                seeds: int = 3, iters: int | None = None, batch_size: int | None = None,
                name: str = "searched", space_cls: str | None = None, space_reg: str = "reg",
                split: str = "val", backbone_checkpoint=None, pretrain=None, progress=None) -> "Comparison":
        """Check the inputs (one clear :class:`UserError` for each problem) and list the variants.
        ``split="test"`` scores on the data's held-out test split (:func:`~autoloss.detection.coco.find_test_split`)
        instead of the validation split the search ranked candidates on. The backbone starts as a search's
        does: from ``backbone_checkpoint``, or pretrained (``pretrain``), or as the config says."""
        require_mmdetection("loss evaluations")
        from autoloss.detection.mmdet.detectors import TWO_STAGE, open_detector  # heavy: mmengine, mmdet

        if not (loss_cls or loss_reg):
            raise UserError("give the losses to evaluate: --loss-cls EXPR and/or --loss-reg EXPR")
        if seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {seeds}")
        if iters is not None and iters < 1:
            raise UserError(f"--iters must be a positive integer, got {iters}")
        if split not in ("val", "test"):
            raise UserError(f"--split must be val or test, got {split!r}")
        out = Path(out_dir)
        target = open_detector(detector, data_dir, out)
        detector, path, splits, cfg, kind, sigmoid = (target.detector, target.path, target.splits, target.cfg,
                                                      target.kind, target.sigmoid)
        scored_ann, scored_img_dir = splits.val_ann, splits.val_img_dir
        if split == "test":
            scored_ann, scored_img_dir, _ = find_test_split(data_dir, splits)
        checkpoint, prefix, _ = starting_backbone(cfg, splits, out, backbone_checkpoint, pretrain, progress)
        if iters is None:
            if cfg.get("train_cfg", {}).get("type") != "IterBasedTrainLoop":
                raise UserError(f"{path.name}: pass --iters (the config's schedule is not iteration-based)")
            iters = int(cfg.train_cfg.max_iters)

        searched = {"name": name, "iou_aware": False}
        if loss_cls:
            space = load_space(space_cls or ("cls_sigmoid" if sigmoid else "cls_softmax"))
            if space.mode not in ("softmax", "sigmoid") or (space.mode == "sigmoid") != sigmoid:
                raise UserError(f"--loss-cls: the head of {path.name} classifies with "
                                f"{'sigmoid' if sigmoid else 'softmax'} scores; space '{space.name}' is {space.mode}")
            expression = str(LossGenotype(space).parse(loss_cls))
            loss_type = "SearchedSigmoidClsLoss" if sigmoid else "SearchedSoftmaxClsLoss"
            searched["cls_loss"] = {"type": loss_type, "expression": expression, "space": space.name}
            searched["iou_aware"] = True
        if loss_reg:
            space = load_space(space_reg)
            if space.mode != "regression":
                raise UserError(f"--loss-reg needs a regression space, not '{space.name}' ({space.mode})")
            expression = str(LossGenotype(space).parse(loss_reg))
            searched["reg_loss"] = {"type": "SearchedIoULoss", "expression": expression, "space": space.name}

        cls_name = "FL" if sigmoid else "CE"
        variants = [Variant(f"{cls_name} + GIoU", baseline=True)]
        if kind == TWO_STAGE:  # the paper's other Faster R-CNN baseline: L1 on the box deltas
            variants.append(Variant(f"{cls_name} + L1", reg_loss={"type": "L1Loss", "loss_weight": 1.0},
                                    decoded_boxes=False, baseline=True))
        variants.append(Variant(**searched))
        if len({v.name for v in variants}) != len(variants):
            raise UserError(f"--name {name!r} is the name of a baseline; choose another")
        return cls(detector, kind, splits.train_ann, scored_ann, splits.train_img_dir, scored_img_dir,
                   tuple(splits.categories), str(out.resolve()), int(iters), batch_size,
                   tuple(range(int(seeds))), tuple(variants), split, checkpoint, prefix)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["categories"], d["seeds"] = list(self.categories), list(self.seeds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Comparison":
        d = dict(d)
        d["variants"] = tuple(Variant(**v) for v in d["variants"])
        d["categories"], d["seeds"] = tuple(d["categories"]), tuple(d["seeds"])
        return cls(**d)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    # ------------------------------------------------------------------ one run (in a worker)

    def config(self, variant: Variant, seed: int, work_dir):
        # heavy: mmengine, mmdet
        from autoloss.detection.mmdet.detectors import TWO_STAGE, load_detector_config, searched_head

        splits = CocoSplits(self.train_ann, self.val_ann, self.train_img_dir, self.val_img_dir,
                            list(self.categories), 0, 0)
        cfg = load_detector_config(self.detector, splits, work_dir, max_iters=self.iters, batch_size=self.batch_size,
                                   cls_loss=variant.cls_loss, reg_loss=variant.reg_loss,
                                   iou_aware_heads=variant.iou_aware)
        if self.kind == TWO_STAGE and not variant.decoded_boxes:
            searched_head(cfg).reg_decoded_bbox = False
        start_backbone_from(cfg, self.backbone_checkpoint, self.backbone_prefix)
        return finish_run_config(cfg, self.iters, seed, f"evaluate-s{seed}")

    def train(self, name: str, seed: int) -> dict:
        """Train and test one variant with one seed; its log goes to ``OUT/work/<variant>-s<seed>/run.log``."""
        import autoloss.detection.mmdet.detectors  # noqa: F401  (heavy: mmdet; registers the searched losses and heads)

        work_dir = Path(self.out_dir) / "work" / f"{_slug(name)}-s{seed}"
        work_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with output_to(work_dir / "run.log"):
            metrics, final_loss = train_and_test(self.config(self.variant(name), seed, work_dir))
        return {**scores(metrics), "final_loss": final_loss, "seconds": time.perf_counter() - start}

    # ------------------------------------------------------------------ all runs

    def claim_out_dir(self) -> Path:
        """Write ``comparison.json`` into the output directory, or check that the one there is this
        comparison (runs of another one must not mix into this table)."""
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        settings = out / "comparison.json"
        if not settings.exists():
            write_atomic(settings, json.dumps(self.to_dict(), indent=2) + "\n")
        elif OPTIONS_BEFORE | json.loads(settings.read_text()) != json.loads(json.dumps(self.to_dict())):
            raise UserError(f"{out} holds another comparison (other losses, detector, data, schedule or "
                            f"seeds): choose another --out, or delete {settings.name} and runs.jsonl")
        return out

    def run(self, executor, timeout: float, on_result=None) -> dict:
        """Run every (variant, seed) not yet in ``runs.jsonl``; ``{(variant, seed): record}``."""
        log = self.claim_out_dir() / "runs.jsonl"
        done = load_runs(log)
        todo = [(v.name, s) for s in self.seeds for v in self.variants if (v.name, s) not in done]
        jobs = [Job(train_variant, self.to_dict(), name, "evaluate", seed) for name, seed in todo]
        with log.open("a") as sink:
            for index, job, outcome in executor.stream(jobs, timeout):
                record = {"variant": job.genotype, "seed": job.seed, "status": outcome.status,
                          "seconds": outcome.seconds}
                if outcome.ok:
                    record.update(outcome.value)
                else:
                    record["error"] = outcome.error
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                done[job.genotype, job.seed] = record
                if on_result:
                    on_result(record)
        return done

    def table(self, runs: dict) -> str:
        """The Markdown table: AP, AP50, AP75 in percent (mean over the finished seeds, +- standard
        deviation when there are several) with the difference to the reference baseline."""
        reference = self.variants[0].name
        means = {v.name: _means(runs, v.name, self.seeds) for v in self.variants}
        lines = ["| losses | " + " | ".join(label for _, label in METRICS) + " | runs |",
                 "|---|" + "---:|" * len(METRICS) + "---:|"]
        for variant in self.variants:
            row = means[variant.name]
            cells = []
            for key, _ in METRICS:
                mean, std = row[key]
                if mean is None:
                    cells.append("-")
                    continue
                cell = f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")
                base = means[reference][key][0]
                if variant.name != reference and base is not None:
                    cell += f" ({100 * (mean - base):+.1f})"
                cells.append(cell)
            label = variant.name + (" (reference)" if variant.name == reference else "")
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {row['finished']}/{len(self.seeds)} |")
        return "\n".join(lines + [""] + self.claims(runs))

    def claims(self, runs: dict) -> list[str]:
        """Each searched variant's AP against the reference baseline's over the seeds: Welch's one-sided
        test (:mod:`autoloss.engine.evidence`), with the difference ± its standard error, in AP points."""
        reference = self.variants[0].name
        base = [100 * v for v in _values(runs, reference, self.seeds)]
        lines = [f"AP ± is the standard deviation over the seeds. Each searched loss against {reference}, in AP "
                 f"points: 'better' means at least {evidence.MIN_SEEDS} seeds each, mean above, and "
                 f"{evidence.TEST} t-test at level {evidence.ALPHA:g}, its p Holm-adjusted over the searched "
                 "losses; ± is one standard error of the difference."]
        searched = [variant for variant in self.variants if not variant.baseline]
        aps = {variant.name: [100 * v for v in _values(runs, variant.name, self.seeds)] for variant in searched}
        family = evidence.holm({name: evidence.compare(mine, base) for name, mine in aps.items()})
        for variant in searched:
            claim = family[variant.name]
            mine = claim.candidate.values
            if min(len(mine), len(base)) < evidence.MIN_SEEDS:
                diff = f" (difference {claim.difference:+.2f} AP)" if claim.difference is not None else ""
                lines.append(f"- {variant.name}: {len(mine)} and {len(base)} finished seeds{diff}: fewer than "
                             f"{evidence.MIN_SEEDS} seeds each, so nothing can be claimed (--seeds 3 or more)")
            else:
                bound = f"; {claim.bound_text(2)}" if claim.lower is not None else ""
                lines.append(f"- {variant.name}: {claim.text(digits=2)}{bound}")
        return lines

    def describe(self) -> list[str]:
        """The losses of each variant, for people."""
        lines = []
        for variant in self.variants:
            parts = []
            for loss in (variant.cls_loss, variant.reg_loss):
                if loss and "expression" in loss:
                    genotype = LossGenotype(load_space(loss["space"]))
                    infix = genotype.describe(genotype.parse(loss["expression"]))["infix"]
                    parts.append(f"{loss['type']} `{loss['expression']}` = {infix}")
                elif loss:
                    parts.append(loss["type"])
            if parts:
                lines.append(f"- {variant.name}: " + "; ".join(parts)
                             + ("; IoU-aware head" if variant.iou_aware else ""))
        return lines


def train_variant(comparison: dict, variant: str, stage: str, seed: int) -> dict:
    """Picklable worker entry point (the executor's Job signature)."""
    return Comparison.from_dict(comparison).train(variant, seed)


def load_runs(path: Path) -> dict:
    """Finished runs of ``runs.jsonl`` by (variant, seed); a torn last line (a killed run) is ignored."""
    runs = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("status") == "ok":
            runs[record["variant"], record["seed"]] = record
    return runs


def write_markdown(comparison: Comparison, runs: dict, path: Path) -> str:
    failed = [r for r in runs.values() if r.get("status") != "ok"]
    lines = [f"# Loss comparison on {Path(comparison.detector).name}", "",
             f"{len(comparison.seeds)} seed(s), {comparison.iters} training iterations each; train "
             f"{comparison.train_ann}, scored on the {'held-out test' if comparison.split == 'test' else 'validation'} "
             f"split {comparison.val_ann} (COCO bbox AP, %).", "",
             comparison.table(runs), "", "Losses:", *comparison.describe()]
    if failed:
        lines += ["", "Failed runs:", *[f"- {r['variant']} seed {r['seed']}: {r.get('error', r['status'])}"
                                        for r in failed]]
    text = "\n".join(lines) + "\n"
    write_atomic(path, text)
    return text


def _values(runs: dict, name: str, seeds, key: str = "fitness") -> list[float]:
    """The finite ``key`` of each finished seed of variant ``name``."""
    found = [runs[name, s].get(key) for s in seeds if (name, s) in runs and runs[name, s].get("status") == "ok"]
    return [float(v) for v in found if isinstance(v, (int, float)) and math.isfinite(float(v))]


def _means(runs: dict, name: str, seeds) -> dict:
    finished = [runs[name, s] for s in seeds if (name, s) in runs and runs[name, s].get("status") == "ok"]
    row = {"finished": len(finished)}
    for key, _ in METRICS:
        values = [float(r[key]) for r in finished if math.isfinite(float(r.get(key, float("nan"))))]
        mean = statistics.fmean(values) if values else None
        std = statistics.stdev(values) if len(values) > 1 else None
        row[key] = (mean, std)
    return row


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "variant"
