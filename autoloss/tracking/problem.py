"""The tracking-cell search as an engine :class:`~autoloss.engine.study.Problem`.

:func:`tracking_problem` joins the cell representation (:mod:`autoloss.cell`) to the tracking proxy
(:mod:`autoloss.tracking.train`): every candidate cell is the neck of the baseline tracker, trained in
the search regime (frozen backbone and size head) and scored by the AO of one-pass tracking.

Stages (:func:`evaluate`, run in worker processes; ``task`` is plain data):

- ``mos`` (CSE's cheap training stage): ``mos_steps`` steps on the ``verify`` split, AO on its first
  ``mos_sequences`` sequences (a few seconds on the CPU demo);
- ``proxy``: the full search-regime training on the ``weights`` split, AO on the ``holdout`` split;
- ``test`` (``autoloss evaluate``): the same training, AO on the ``test`` split.

The differentiable strategies search the same cells on a supernet tracker: the problem's
``supernet`` hooks are :data:`autoloss.tracking.supernet_model.SUPERNET`.

The run's baseline is the hand-designed neck (key ``"hand"``, a
:class:`~autoloss.cell.representation.Reference` of the representation): breeding starts from the
representation's initial cell (DARTS_V2), and when the hall of fame hands the hand neck over as a
parent, the operators breed it as the initial cell.

Data: a root holding one GOT-10k-layout folder per role (:data:`ROLES`): ``weights/`` (the
network's and the candidates' training), ``verify/`` (MOS), ``holdout/`` (the proxy's AO) and
``test/`` (``autoloss evaluate``; fully annotated), and for a differentiable search
``architecture/`` (alpha's training). A GOT-10k download (``train/``, ``val/``; its test split has
no public boxes) keeps ``val/`` for the test alone: :func:`carve_download` carves seeded, disjoint
verify, hold-out and architecture sequences out of ``train/`` (the rest is the weights split) and
writes them as folders of links into the run directory, listed there (see :func:`resolve_splits`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from autoloss.engine.study import Problem
from autoloss.errors import UserError

ROLES = ("weights", "verify", "holdout", "test")
# A GOT-10k download before :func:`carve_download`: every role but the test is a part of train/.
GOT10K_SPLITS = {"weights": "train", "verify": "train", "holdout": "train", "test": "val"}
CARVED = {"verify": (0.02, 180), "holdout": (0.02, 180), "architecture": (0.10, None)}  # (share of train/, cap)
SPLITS_DIR = "splits"  # in the run directory: the carved download's folders of links
CARVE_FILE = "carve.json"  # in SPLITS_DIR: the source, the seed and every role's sequences (written last)
CARVE_VERSION = 1
BASELINE_FILE = "baseline_tracker.pt"
DECODE_LIMIT = 20000  # frames decoded fully by the data check (beyond it: headers only)
STAGE_LIMITS = {"mos_steps": 10**8, "mos_sequences": 100_000}  # the stage settings' ranges (from 1)


@dataclass(frozen=True)
class StageSettings:
    """What the cheap MOS stage does (the proxy's budget is the TrackingSettings' ``steps``)."""

    mos_steps: int = 20  # search-regime steps on the verify split
    mos_sequences: int = 4  # verify sequences tracked for the MOS score

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= STAGE_LIMITS[f.name]:
                raise UserError(f"tracker option {f.name} must be an integer in [1, {STAGE_LIMITS[f.name]}], "
                                f"got {str(value)[:40]}")


@dataclass(frozen=True)
class Tracker:
    """A named proxy tracker: its settings, the cell space it searches, stage timeouts, what it needs."""

    name: str
    settings: Any  # TrackingSettings
    timeouts: dict
    needs_checkpoint: bool = False
    description: str = ""


def trackers() -> dict[str, Tracker]:
    from autoloss.tracking.train import TrackingSettings

    return {
        "dimp_small": Tracker("dimp_small", TrackingSettings(threads=1), {"mos": 600.0, "proxy": 1800.0, "test": 1800.0},
                              description="ResNet-18 trained from scratch, C = 32, 128 px crops: the CPU demo"),
        "dimp_r50": Tracker("dimp_r50", TrackingSettings(
            depth=50, channels=64, crop_size=288, filter_size=3, baseline_steps=20000, baseline_batch=16,
            steps=2000, batch=16, pool=100, track_iterations=10, init_shifts=4, threads=0),
            {"mos": 3600.0, "proxy": 6 * 3600.0, "test": 6 * 3600.0}, needs_checkpoint=True,
            description="ResNet-50 from an ImageNet checkpoint, C = 64, 288 px crops (18 x 18 maps): one GPU "
                        "per evaluation"),
    }


def tracker(name: str) -> Tracker:
    known = trackers()
    if name not in known:
        raise UserError(f"unknown tracker '{name}': expected one of {', '.join(sorted(known))}")
    return known[name]


# ------------------------------------------------------------------------------------- options


def _convert(name: str, text: str, default: Any, annotation: str) -> Any:
    if text.lower() in ("none", "") and ("None" in str(annotation)):
        return None
    kind = type(default) if default is not None else (int if "int" in str(annotation) else str)
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        return text
    except ValueError:
        raise UserError(f"--tracker-option {name}={text[:40]}: expected {kind.__name__}") from None


def apply_options(settings, stages: StageSettings, options: list[str] | None):
    """``KEY=VALUE`` overrides of the tracker's settings and the stage settings; one-line errors."""
    setting_fields = {f.name: f for f in fields(settings)}
    stage_fields = {f.name: f for f in fields(stages)}
    changes, stage_changes = {}, {}
    for option in options or []:
        name, sep, text = option.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--tracker-option takes KEY=VALUE, got {option[:60]!r}")
        if name in setting_fields:
            changes[name] = _convert(name, text.strip(), getattr(settings, name), setting_fields[name].type)
        elif name in stage_fields:
            stage_changes[name] = _convert(name, text.strip(), getattr(stages, name), stage_fields[name].type)
        else:
            known = sorted(setting_fields) + sorted(stage_fields)
            raise UserError(f"unknown --tracker-option {name!r} (known: {', '.join(known)})")
    if "backbone_checkpoint" in changes:
        raise UserError("set the backbone checkpoint with --backbone-checkpoint FILE")
    return dataclasses.replace(settings, **changes), dataclasses.replace(stages, **stage_changes)


# ---------------------------------------------------------------------------------------- data


def resolve_splits(data_root: str | Path) -> dict[str, str]:
    """The folder (under ``data_root``) of each role: ours (weights/ ...) or a GOT-10k download's
    (:data:`GOT10K_SPLITS`: everything but the test in train/, until :func:`carve_download` splits it)."""
    root = Path(data_root)
    if not root.is_dir():
        raise UserError(f"tracking data folder {root} does not exist or is not a directory")
    if not (root / "weights").exists() and (root / "train" / "list.txt").is_file() and (root / "val" / "list.txt").is_file():
        return dict(GOT10K_SPLITS)
    missing = [role for role in ROLES if not (root / role / "list.txt").is_file()]
    if missing:
        raise UserError(f"{root} is not a GOT-10k-layout tracking root: no {root / missing[0] / 'list.txt'} (expected "
                        f"the folders {', '.join(r + '/' for r in ROLES)} each with list.txt and its sequences, "
                        "or a GOT-10k download's train/ and val/)")
    return {role: role for role in ROLES}


def is_got10k_download(splits: dict[str, str]) -> bool:
    """Whether ``splits`` (from :func:`resolve_splits`) are a GOT-10k download's, still to be carved."""
    return splits == GOT10K_SPLITS


def carve_plan(names: list[str], seed: int) -> dict[str, list[str]]:
    """The sequences of each role carved out of a train split's ``names``: seeded, disjoint, covering.

    Verify and hold-out take 2% of the sequences each (at most 180, the size of GOT-10k's val), the
    architecture split 10%, each at least one; the weights split keeps the rest. The names are shuffled
    by ``random.Random(seed)`` from their sorted order, so the plan depends on the set and the seed only.
    """
    total = len(names)
    counts = {role: max(1, round(share * total)) for role, (share, _) in CARVED.items()}
    counts = {role: min(count, CARVED[role][1] or count) for role, count in counts.items()}
    if total - sum(counts.values()) < 1:
        raise UserError(f"a GOT-10k train/ of {total} sequence(s) is too small to carve verify, hold-out and "
                        f"architecture sequences out of it and keep some to train on (at least "
                        f"{sum(counts.values()) + 1} are needed)")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    plan, start = {}, 0
    for role in CARVED:
        plan[role] = sorted(order[start:start + counts[role]])
        start += counts[role]
    plan["weights"] = sorted(order[start:])
    return plan


def carve_download(download: str | Path, run_dir: str | Path, seed: int = 0) -> tuple[Path, dict[str, str]]:
    """A GOT-10k download's roles as GOT-10k-layout folders of ``run_dir/splits``: the data root and
    splits the search and ``autoloss evaluate`` then read.

    ``weights/``, ``verify/``, ``holdout/`` and ``architecture/`` are the parts of ``train/`` that
    :func:`carve_plan` draws with ``seed``, ``test/`` is ``val/`` whole: each folder has its
    ``list.txt`` and one link per sequence into the download (nothing is copied). ``carve.json``
    (written last) records the source, the seed and every role's sequences; a folder carved from
    another download or with another seed is refused, not overwritten, and a complete one is re-used.
    """
    download, root = Path(download).resolve(), Path(run_dir) / SPLITS_DIR
    sources = {role: "train" for role in (*CARVED, "weights")} | {"test": "val"}
    plan = carve_plan(_list_names(download / "train"), seed)
    plan["test"] = _list_names(download / "val")
    record = {"version": CARVE_VERSION, "source": str(download), "seed": seed, "folders": sources, "sequences": plan}
    manifest = root / CARVE_FILE
    splits = {role: role for role in (*ROLES, "architecture")}
    if manifest.is_file():
        try:
            stored = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"cannot read {manifest}: {str(exc).splitlines()[0][:200]}") from None
        if stored != record:
            what = (f"from {stored.get('source')} with seed {stored.get('seed')}" if isinstance(stored, dict)
                    else "by something else")
            raise UserError(f"{root} holds splits carved {what}, not from {download} with seed {seed} as they "
                            "are now: not overwritten (use another --out, or the data and seed of that run)")
        return root, splits
    from autoloss.files import path_error, write_atomic

    for role, names in plan.items():
        folder = root / role
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name in names:
                link, target = folder / name, download / sources[role] / name
                if link.is_symlink() and Path(os.readlink(link)) == target:
                    continue
                if link.exists() or link.is_symlink():
                    raise UserError(f"{link} exists and is not autoloss's link to {target}: not overwritten")
                link.symlink_to(target, target_is_directory=True)
        except OSError as exc:
            raise path_error(folder, exc) from None
        write_atomic(folder / "list.txt", "".join(f"{name}\n" for name in names))
    write_atomic(manifest, json.dumps(record, indent=1) + "\n")
    return root, splits


def _list_names(folder: Path) -> list[str]:
    """The sequence names of a GOT-10k-layout folder's list.txt (one per line; blank lines skipped)."""
    try:
        text = (folder / "list.txt").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {folder / 'list.txt'}: {str(exc).splitlines()[0][:200]}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def usable_frames(sequence) -> int:
    """The sequence's frames with a box and the target visible (what the pair sampler draws from)."""
    import numpy as np

    return int((sequence.visible() & np.isfinite(sequence.boxes).all(axis=1)).sum())


def check_data(data_root: str | Path, splits: dict[str, str], decode_limit: int = DECODE_LIMIT) -> dict[str, int]:
    """Read every role's folder (list, boxes, labels, frame headers; frames decoded fully up to
    ``decode_limit``) so that bad data is one UserError line before anything is trained.
    Returns the number of sequences per role."""
    from autoloss.tracking.dataset import load_frame, read_sequences

    counts, seen, frames = {}, {}, []
    for role in ROLES:
        folder = splits[role]
        if folder not in seen:
            sequences = read_sequences(data_root, folder, allow_first_only=False)
            seen[folder] = sequences
            frames += [path for sequence in sequences for path in sequence.frames]
            if not any(usable_frames(sequence) >= 2 for sequence in sequences):
                longest = max(len(sequence) for sequence in sequences)
                raise UserError(f"{Path(data_root) / folder}: no sequence has two frames with the target visible "
                                f"({len(sequences)} sequence(s) of at most {longest} frame(s)); the tracker trains "
                                "on pairs of frames and scores the frames after the first")
        counts[role] = len(seen[folder])
    if len(frames) <= decode_limit:
        for path in frames:
            load_frame(path)
    return counts


# ---------------------------------------------------------------------------------------- problem


def tracking_problem(name: str, settings, data_root: str | Path, baseline_ckpt: str | Path,
                     stages: StageSettings | None = None, splits: dict[str, str] | None = None,
                     timeouts: dict | None = None, max_params: int | None = None,
                     max_flops: int | None = None) -> Problem:
    """The cell search on the tracker ``name`` with ``settings`` (a TrackingSettings), data and baseline."""
    from autoloss.cell.representation import HAND, CellRepresentation, CellSpace
    from autoloss.tracking.supernet_model import SUPERNET  # heavy: torch; and it imports this module

    stages = stages or StageSettings()
    space = CellSpace(channels=settings.channels, height=settings.map_size, width=settings.map_size,
                      max_params=max_params, max_flops=max_flops)
    representation = CellRepresentation(space, references=(HAND,))
    task = {
        "tracker": name,
        "settings": settings.to_dict(),
        "stages": asdict(stages),
        "data_root": str(Path(data_root).resolve()),
        "splits": dict(splits or {role: role for role in ROLES}),
        "baseline": str(Path(baseline_ckpt).resolve()),
        "device": "auto",
        "space": {"channels": space.channels, "height": space.height, "width": space.width,
                  "max_params": max_params, "max_flops": max_flops},
    }
    return Problem(representation=representation, operators=representation, evaluate=evaluate, task=task,
                   metric="AO", baseline=HAND.name, timeouts=dict(timeouts or tracker(name).timeouts),
                   start_method="spawn", supernet=SUPERNET)


def worker_settings(task: dict):
    """The task's TrackingSettings on this worker's device: its GPU if it has one, else the CPU."""
    from autoloss.tracking.train import TrackingSettings

    settings = TrackingSettings.from_dict(task["settings"])
    device = task.get("device", "auto")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = settings.threads if device != "cpu" or settings.threads > 0 else 1
    return dataclasses.replace(settings, device=device, threads=threads)


def evaluate(task: dict, genotype_key: str, stage: str, seed: int) -> dict:
    """Worker side: train the neck ``genotype_key`` ("hand" or a genotype) for ``stage``; AO as fitness."""
    from autoloss.tracking.train import evaluate_neck

    settings = worker_settings(task)
    splits, root, baseline = task["splits"], task["data_root"], task["baseline"]
    if stage == "mos":
        mos = StageSettings(**task.get("stages", {}))
        cheap = dataclasses.replace(settings, steps=mos.mos_steps, pool=min(settings.pool, mos.mos_steps))
        return evaluate_neck(cheap, root, baseline, genotype_key, split=splits["verify"], seed=seed,
                             train_split=splits["verify"], limit=mos.mos_sequences)
    if stage in ("proxy", "test"):
        split = splits["holdout" if stage == "proxy" else "test"]
        return evaluate_neck(settings, root, baseline, genotype_key, split=split, seed=seed,
                             train_split=splits["weights"])
    raise ValueError(f"unknown tracking stage {stage!r} (mos, proxy, test)")
