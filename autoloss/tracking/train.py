"""Training the proxy tracker in its two regimes, and ``evaluate_neck``: the search's proxy for one neck.

- the baseline: the whole network with the hand neck trained from scratch on the "weights" split
  (backbone included: no pretrained weights exist here; with ``backbone_checkpoint`` the backbone
  starts from it), saved with its settings and re-used while those and the data match;
- the search regime (CHASE with its pretrained PrDiMP): the baseline loaded, backbone and size head
  FROZEN (BN in eval mode), adapters, neck (the candidate) and classifier re-initialised and trained
  for ``steps`` with Adam (``lr``, CHASE's code: 1e-3) on the "weights" split.

Since the frozen backbone is a fixed function of the crops, the search regime computes its maps for
the ``pool`` distinct batches once and cycles over them (kept in memory and next to the baseline's
checkpoint): every candidate trains on exactly the same inputs, and only the neck and classifier
cost time.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from autoloss.errors import UserError
from autoloss.files import write_atomic
from autoloss.tracking.backbone import load_backbone_checkpoint
from autoloss.tracking.boxes import sample_at
from autoloss.tracking.classifier import classifier_loss, crop_to_cells, gaussian_label_density
from autoloss.tracking.dataset import read_sequences
from autoloss.tracking.metrics import got10k_scores
from autoloss.tracking.model import STRIDE, TrackerNet
from autoloss.tracking.sampling import FrameCache, PairSampler, SampleBatch
from autoloss.tracking.tracker import ProxyTracker, run_sequence

CHECKPOINT_VERSION = 1
WEIGHTS = "weights"  # the split the network's weights are trained on
MAP_CACHE_SIZE = 2  # search-map pools kept in memory per process (the proxy's and the MOS's)


DEPTHS = (18, 34, 50, 101, 152)  # the ResNets MMDetection builds
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds must fit
# Every numeric knob's range, inclusive (an int range: integers only). Beyond these a run either fails
# with a traceback, exhausts memory or measures nothing (AO 0 everywhere); the memory a combination
# needs is estimated on top of them (estimate_memory).
SETTING_RANGES: dict[str, tuple] = {
    "depth": (18, 152), "base_channels": (4, 512), "channels": (1, 1024), "filter_size": (1, 63),
    "crop_size": (2 * STRIDE, 1024), "search_factor": (1.0, 32.0), "sigma_factor": (1e-3, 10.0),
    "frames": (1, 64), "max_gap": (1, 100_000), "train_jitter": (0.0, 10.0), "test_jitter": (0.0, 10.0),
    "scale_jitter": (0.0, 2.0), "train_iterations": (0, 1000), "baseline_steps": (1, 10**8),
    "baseline_batch": (1, 4096), "baseline_lr": (1e-12, 10.0), "size_weight": (0.0, 1e6), "steps": (1, 10**8),
    "batch": (1, 4096), "lr": (1e-12, 10.0), "pool": (1, 100_000), "track_iterations": (1, 1000),
    "init_shifts": (0, 8), "scale_lr": (0.0, 1.0), "update_interval": (0, 10**6),
    "weights_sequences": (1, 100_000), "holdout_sequences": (1, 100_000), "test_sequences": (1, 100_000),
    "verify_sequences": (1, 100_000), "sequence_frames": (2, 100_000), "frame_size": (32, 4096),
    "data_seed": (0, MAX_SEED), "seed": (0, MAX_SEED), "threads": (0, 4096),
}


def _bound(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _shown(value) -> str:
    """A value as an error message shows it: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class TrackingSettings:
    """Every knob of the tracking proxy (the defaults: the CPU demo)."""

    # network
    depth: int = 18
    base_channels: int = 64
    channels: int = 32  # C: the width of the cell's inputs and nodes (output 4 C)
    filter_size: int = 3
    backbone_checkpoint: str | None = None
    # crops and labels
    crop_size: int = 128
    search_factor: float = 4.0
    sigma_factor: float = 0.25  # label sigma in cells = sigma_factor * map size / search_factor (DiMP)
    frames: int = 3  # train frames and test frames per sample
    max_gap: int = 10
    train_jitter: float = 0.5
    test_jitter: float = 1.0
    scale_jitter: float = 0.15
    train_iterations: int = 5  # steepest-descent steps while training
    # the baseline (whole network, hand neck)
    baseline_steps: int = 300
    baseline_batch: int = 2
    baseline_lr: float = 1e-3
    size_weight: float = 1.0
    # the search regime (neck + classifier, frozen backbone)
    steps: int = 80
    batch: int = 4
    lr: float = 1e-3
    pool: int = 20  # distinct search batches whose backbone maps are computed once
    # tracking
    track_iterations: int = 10
    init_shifts: int = 4
    scale_lr: float = 0.5
    update_interval: int = 0
    # data: sequences per split and frames per sequence of the synthetic set
    weights_sequences: int = 32
    holdout_sequences: int = 8
    test_sequences: int = 16
    verify_sequences: int = 8
    sequence_frames: int = 30
    frame_size: int = 128
    data_seed: int = 0
    seed: int = 0  # the baseline's seed
    device: str = "cpu"
    threads: int = 0  # torch CPU threads while training and tracking (0: leave torch's setting)

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SETTING_RANGES:
                low, high = SETTING_RANGES[f.name]
                kind = int if isinstance(low, int) else float
                ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
                ok = ok and not isinstance(value, bool) and low <= value <= high  # NaN compares False
                if not ok:
                    problems.append(f"{f.name} must be {'an integer' if kind is int else 'a number'} in "
                                    f"[{_bound(low)}, {_bound(high)}], got {_shown(value)}")
        if problems:  # the checks below assume numbers in range
            raise UserError("tracking settings: " + "; ".join(problems))
        if self.depth not in DEPTHS:
            problems.append(f"depth must be one of {', '.join(map(str, DEPTHS))} (a ResNet), got {self.depth}")
        if self.crop_size % STRIDE:
            problems.append(f"crop_size must be a multiple of {STRIDE}, got {self.crop_size}")
        if self.filter_size % 2 == 0:
            problems.append(f"filter_size must be odd, got {self.filter_size}")
        elif self.filter_size > self.map_size:
            problems.append(f"filter_size {self.filter_size} is larger than the {self.map_size} x {self.map_size} "
                            f"score map of {self.crop_size} px crops (crop_size / {STRIDE})")
        if self.search_factor <= 1:
            problems.append("search_factor must be > 1")
        if not isinstance(self.device, str) or not self.device:
            problems.append(f"device must be a torch device name, got {_shown(self.device)}")
        if self.backbone_checkpoint is not None and not isinstance(self.backbone_checkpoint, str):
            problems.append(f"backbone_checkpoint must be a path, got {_shown(self.backbone_checkpoint)}")
        if problems:
            raise UserError("tracking settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrackingSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown tracking settings {unknown}")
        return cls(**data)

    @property
    def map_size(self) -> int:
        return self.crop_size // STRIDE

    @property
    def sigma(self) -> float:
        return self.sigma_factor * self.map_size / self.search_factor

    def baseline_key(self) -> dict:
        """The settings the baseline's weights depend on (not the search's or the tracker's)."""
        names = (
            "depth base_channels channels filter_size backbone_checkpoint crop_size search_factor sigma_factor frames "
            "max_gap train_jitter test_jitter scale_jitter train_iterations baseline_steps baseline_batch baseline_lr "
            "size_weight seed"
        ).split()
        return {name: getattr(self, name) for name in names}


# Activations a training step keeps for the backward pass, per image, in units of base_channels x crop_size^2
# (the ResNet stem and layers 1-3, every conv, BN and ReLU output counted; layer 4 is not built).
BACKBONE_ACTIVATIONS = {18: 2.2, 34: 3.3, 50: 8.2, 101: 13.0, 152: 19.0}
BACKBONE_PARAMETERS = {18: 2.8e6, 34: 8.2e6, 50: 8.6e6, 101: 27.1e6, 152: 42.0e6}  # layers 1-3 at base 64
CELL_TENSORS = 160  # feature maps of C channels per image in adapters + a cell (8 edges, sep convs) + their grads
GIB = 1 << 30


def estimate_memory(settings: TrackingSettings, workers: int = 1, mos_steps: int = 20) -> dict[str, int]:
    """A rough upper bound (bytes) of the memory the settings need (within about 2x of what a CPU step
    measures): ``baseline``, one process training the whole network (backbone activations of
    ``2 * frames * baseline_batch`` crops, the cell, the classifier's unfolded filter patches per
    steepest-descent step, the parameters with Adam's state); ``step``, one search-regime training step
    of neck and classifier; ``cache``, the half-precision backbone maps of the ``pool`` search batches
    and of the MOS's, which every evaluating process keeps in host memory."""
    s, b, c, m, k = settings.crop_size, settings.base_channels, settings.channels, settings.map_size, settings.filter_size
    expansion = 4 if settings.depth >= 50 else 1
    maps = expansion * b * (2 * (s // 8) ** 2 + 4 * m * m)  # the stride-8 and stride-16 maps of one crop

    def step(images: int, backbone: bool) -> int:
        floats = images * (maps + CELL_TENSORS * c * m * m + 4 * c * k * k * m * m * (settings.train_iterations + 2))
        if backbone:
            floats += images * (3 + BACKBONE_ACTIVATIONS[settings.depth] * b) * s * s
        return int(floats * 4 * 2)  # float32, and the gradients of as much again

    parameters = int(BACKBONE_PARAMETERS[settings.depth] * (b / 64) ** 2 * 4 * 4)  # weights, grads, Adam's 2 moments
    cache = (settings.pool + min(settings.pool, mos_steps)) * settings.batch * 2 * settings.frames * maps * 2
    return {"baseline": step(2 * settings.frames * settings.baseline_batch, True) + parameters,
            "step": step(2 * settings.frames * settings.batch, False) + parameters // 4, "cache": cache}


def machine_memory() -> int | None:
    """The machine's physical memory in bytes (/proc/meminfo's MemTotal, else sysconf); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(settings: TrackingSettings, workers: int | None = 1, mos_steps: int = 20,
                 host: int | None = None, gpu: int | None = None) -> dict[str, int]:
    """Refuse (one UserError line, with the estimate) settings whose :func:`estimate_memory` exceeds the
    machine: on the CPU the host memory holds the baseline's training, then ``workers`` evaluations
    (each its step and its cached maps); with a GPU (``gpu`` bytes; default: the first CUDA device's,
    when there is one) the GPU holds the training steps and the host the cached maps."""
    estimate = estimate_memory(settings, workers or 1, mos_steps)
    host = machine_memory() if host is None else host
    if gpu is None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_properties(0).total_memory
    count = workers or 1
    if gpu:
        needs = [("GPU", gpu, max(estimate["baseline"], estimate["step"]), "a training step"),
                 ("host", host, estimate["cache"] * count, f"the cached backbone maps of {count} worker(s)")]
    else:
        search = (estimate["step"] + estimate["cache"]) * count
        needs = [("host", host, max(estimate["baseline"], search),
                  "the baseline's training" if estimate["baseline"] >= search else f"{count} worker(s) evaluating")]
    for where, total, need, what in needs:
        if total is not None and need > total:
            raise UserError(
                f"these tracking settings need about {need / GIB:.1f} GiB of {where} memory for {what} (an estimate: "
                f"baseline training {estimate['baseline'] / GIB:.1f} GiB for {2 * settings.frames * settings.baseline_batch} "
                f"crops of {settings.crop_size} px, a search step {estimate['step'] / GIB:.1f} GiB, cached maps "
                f"{estimate['cache'] / GIB:.1f} GiB per worker), more than this machine's {total / GIB:.1f} GiB: "
                "lower baseline_batch, batch, frames, crop_size, pool or --workers")
    return estimate


class torch_threads:
    """Use ``count`` torch CPU threads inside the block (0: leave the setting alone)."""

    def __init__(self, count: int):
        self.count = count

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.count > 0:
            torch.set_num_threads(self.count)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


# ------------------------------------------------------------------------------------------ data


def prepare_synthetic_data(settings: TrackingSettings, root: str | Path) -> Path:
    """Write (or re-use) the synthetic splits the settings name under ``root``; return ``root``."""
    from autoloss.tracking.synthetic import generate_dataset

    sizes = {
        "weights": settings.weights_sequences,
        "architecture": 0,
        "holdout": settings.holdout_sequences,
        "verify": settings.verify_sequences,
        "test": settings.test_sequences,
    }
    generate_dataset(root, sizes, settings.sequence_frames, settings.frame_size, settings.data_seed)
    return Path(root)


def split_fingerprint(data_root: str | Path, split: str) -> str:
    """A hash of a split's list and annotations (what a cached training depends on)."""
    folder = Path(data_root) / split
    digest = hashlib.sha1()
    list_file = folder / "list.txt"
    if not list_file.is_file():
        raise UserError(f"{folder} is not a GOT-10k-layout folder: no {list_file}")
    names = list_file.read_text(encoding="utf-8").split()
    digest.update(" ".join(names).encode())
    for name in names:
        for label in ("groundtruth.txt", "cover.label", "absence.label"):
            path = folder / name / label
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


def make_sampler(settings: TrackingSettings, data_root: str | Path, seed: int, cache: FrameCache | None = None,
                 split: str = WEIGHTS) -> PairSampler:
    """Training batches from the sequences of ``data_root/split`` (default: the "weights" split)."""
    return PairSampler(
        read_sequences(data_root, split),
        settings.crop_size,
        settings.search_factor,
        settings.frames,
        settings.max_gap,
        settings.train_jitter,
        settings.test_jitter,
        settings.scale_jitter,
        seed,
        cache,
    )


# ---------------------------------------------------------------------------------------- losses


def _density(boxes: torch.Tensor, settings: TrackingSettings) -> torch.Tensor:
    centres = crop_to_cells(boxes[..., :2] + boxes[..., 2:] / 2, STRIDE)
    return gaussian_label_density(centres, (settings.map_size, settings.map_size), settings.sigma)


def classification_loss(net: TrackerNet, stride8: torch.Tensor, stride16: torch.Tensor, batch: SampleBatch, settings: TrackingSettings) -> torch.Tensor:
    """PrDiMP's weighted KL over the filter iterates, from the backbone maps of train then test frames."""
    frames, sequences = batch.train_boxes.shape[:2]
    feat = net.classifier_features(stride8, stride16)
    feat = feat.reshape(2 * frames, sequences, *feat.shape[1:])
    scores = net.classifier(feat[:frames], feat[frames:], batch.train_boxes, _density(batch.train_boxes, settings), settings.train_iterations)
    return classifier_loss(scores, _density(batch.test_boxes, settings))


def size_loss(net: TrackerNet, stride16: torch.Tensor, batch: SampleBatch, settings: TrackingSettings) -> torch.Tensor:
    """L1 on log(size / nominal size) read at each true target centre."""
    boxes = torch.cat([batch.train_boxes, batch.test_boxes]).reshape(-1, 4)
    centres = crop_to_cells(boxes[:, :2] + boxes[:, 2:] / 2, STRIDE)
    predicted = sample_at(net.size_head(stride16), centres)
    nominal = settings.crop_size / settings.search_factor
    return (predicted - torch.log(boxes[:, 2:].clamp(min=1.0) / nominal)).abs().mean()


def batch_images(batch: SampleBatch) -> torch.Tensor:
    return torch.cat([batch.train_images, batch.test_images]).flatten(0, 1)


# -------------------------------------------------------------------------------------- baseline


def build_net(settings: TrackingSettings, neck: str = "hand") -> TrackerNet:
    return TrackerNet(settings.depth, settings.base_channels, settings.channels, neck, settings.filter_size)


def _checkpoint_key(settings: TrackingSettings, data_root: str | Path, split: str = WEIGHTS) -> dict:
    return {"version": CHECKPOINT_VERSION, "settings": settings.baseline_key(), "data": split_fingerprint(data_root, split)}


def baseline_matches(settings: TrackingSettings, data_root: str | Path, path: str | Path, split: str = WEIGHTS) -> bool:
    """Whether ``path`` holds a baseline trained with these settings on this data (re-usable as it is)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (an unreadable cache is retrained)
        return False
    return isinstance(saved, dict) and saved.get("key") == _checkpoint_key(settings, data_root, split)


def train_baseline(settings: TrackingSettings, data_root: str | Path, out_path: str | Path, log=None,
                   split: str = WEIGHTS) -> Path:
    """Train the whole network with the hand neck on ``split``; re-use ``out_path`` if it matches."""
    out_path = Path(out_path)
    if out_path.exists() and not out_path.is_file():  # checked before minutes of training, not after
        raise UserError(f"cannot write the baseline tracker to {out_path}: it exists and is not a file; move it away")
    if baseline_matches(settings, data_root, out_path, split):
        return out_path
    key = _checkpoint_key(settings, data_root, split)
    with torch_threads(settings.threads):
        _fit_baseline(settings, data_root, out_path, key, log, split)
    return out_path


def _fit_baseline(settings: TrackingSettings, data_root, out_path: Path, key: dict, log, split: str = WEIGHTS) -> None:
    torch.manual_seed(settings.seed)
    net = build_net(settings, "hand")
    if settings.backbone_checkpoint:
        load_backbone_checkpoint(net.backbone, settings.backbone_checkpoint)
    net.to(settings.device).train()
    sampler = make_sampler(settings, data_root, settings.seed, split=split)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.baseline_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / settings.baseline_steps)))
    history = []
    start = time.perf_counter()
    for step in range(settings.baseline_steps):
        batch = sampler.batch(step, settings.baseline_batch).to(settings.device)
        stride8, stride16 = net.backbone_maps(batch_images(batch))
        clf = classification_loss(net, stride8, stride16, batch, settings)
        size = size_loss(net, stride16, batch, settings)
        loss = clf + settings.size_weight * size
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        history.append((clf.item(), size.item()))
        if log is not None and (step + 1) % 25 == 0:
            recent = np.mean(history[-25:], axis=0)
            log(f"baseline step {step + 1}/{settings.baseline_steps}: classifier {recent[0]:.3f} size {recent[1]:.3f} ({time.perf_counter() - start:.0f} s)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.cpu() for k, v in net.state_dict().items()}
    checkpoint = {"key": key, "state_dict": state, "history": [list(h) for h in history]}
    write_atomic(out_path, lambda file: torch.save(checkpoint, file))  # a full disk: one line, no temporary left


def load_baseline(settings: TrackingSettings, path: str | Path) -> TrackerNet:
    """The baseline network (hand neck) from a checkpoint written by ``train_baseline``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"baseline tracker checkpoint {path} does not exist")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("key", {}).get("settings") != settings.baseline_key():
        raise UserError(f"baseline tracker checkpoint {path} was trained with other settings")
    net = build_net(settings, "hand")
    net.load_state_dict(saved["state_dict"])
    return net


# -------------------------------------------------------------------------------- search regime

_MAP_CACHE: dict[tuple, list] = {}


def search_maps(net: TrackerNet, settings: TrackingSettings, data_root, baseline_ckpt, seed: int,
                split: str = WEIGHTS) -> list:
    """The frozen backbone's maps of the ``pool`` search batches of ``split``: [(stride8, stride16, batch), ...]."""
    path = Path(baseline_ckpt)
    names = "crop_size search_factor frames max_gap train_jitter test_jitter scale_jitter batch pool".split()
    knobs = tuple((n, getattr(settings, n)) for n in names)
    key = (str(path.resolve()), path.stat().st_mtime_ns, split_fingerprint(data_root, split), knobs, seed)
    if key in _MAP_CACHE:
        return _MAP_CACHE[key]
    tag = hashlib.sha1(repr(key[2:]).encode()).hexdigest()[:12]
    cache_file = path.with_name(f"{path.stem}.search-maps-{tag}.pt")
    entries = None
    if cache_file.is_file() and cache_file.stat().st_mtime_ns >= path.stat().st_mtime_ns:
        try:
            entries = torch.load(cache_file, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 (recompute an unreadable cache)
            entries = None
    if entries is None:
        sampler = make_sampler(settings, data_root, seed, split=split)
        entries = []
        with torch.no_grad():
            for index in range(settings.pool):
                batch = sampler.batch(index, settings.batch)
                stride8, stride16 = net.backbone_maps(batch_images(batch).to(settings.device))
                entries.append({
                    "stride8": stride8.cpu().half(),
                    "stride16": stride16.cpu().half(),
                    "train_boxes": batch.train_boxes,
                    "test_boxes": batch.test_boxes,
                })
        write_atomic(cache_file, lambda file: torch.save(entries, file))
    if len(_MAP_CACHE) >= MAP_CACHE_SIZE:
        _MAP_CACHE.pop(next(iter(_MAP_CACHE)))
    _MAP_CACHE[key] = entries
    return entries


def train_search(settings: TrackingSettings, data_root, baseline_ckpt, neck_spec: str, seed: int = 0,
                 split: str = WEIGHTS) -> tuple[TrackerNet, list[float]]:
    """The search regime: baseline loaded, backbone and size head frozen, a fresh ``neck_spec`` + classifier
    trained on batches of ``split``."""
    net = load_baseline(settings, baseline_ckpt).to(settings.device)
    for module in net.frozen_modules():
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    entries = search_maps(net, settings, data_root, baseline_ckpt, seed, split)
    torch.manual_seed(seed)
    net.replace_neck(neck_spec)
    net.to(settings.device)
    trained = net.searched_parameters()
    optimizer = torch.optim.Adam(trained, lr=settings.lr)
    for module in (net.adapters, net.neck, net.classifier):
        module.train()
    losses = []
    for step in range(settings.steps):
        entry = entries[step % len(entries)]
        stride8 = entry["stride8"].to(settings.device).float()
        stride16 = entry["stride16"].to(settings.device).float()
        batch = SampleBatch(None, entry["train_boxes"].to(settings.device), None, entry["test_boxes"].to(settings.device))
        loss = classification_loss(net, stride8, stride16, batch, settings)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 10.0)
        optimizer.step()
        losses.append(loss.item())
    net.eval()
    return net, losses


def make_tracker(net: TrackerNet, settings: TrackingSettings) -> ProxyTracker:
    return ProxyTracker(
        net,
        settings.crop_size,
        settings.search_factor,
        settings.sigma,
        init_iterations=settings.track_iterations,
        scale_lr=settings.scale_lr,
        init_shifts=settings.init_shifts,
        update_interval=settings.update_interval,
        device=settings.device,
    )


def track_split(tracker, data_root, split: str, limit: int | None = None) -> dict:
    """OPE over every sequence of ``split`` (the first ``limit`` only, if given); the GOT-10k scores and speed."""
    sequences = read_sequences(data_root, split, allow_first_only=False)[:limit]
    per_sequence, times = [], []
    for sequence in sequences:
        boxes, seconds = run_sequence(tracker, sequence)
        per_sequence.append((boxes, sequence.boxes, sequence.visible(), sequence.image_size))
        times.append(seconds)
    return got10k_scores(per_sequence, times)


def evaluate_neck(settings: TrackingSettings, data_root, baseline_ckpt, neck_spec: str, split: str = "holdout", seed: int = 0,
                  train_split: str = WEIGHTS, limit: int | None = None) -> dict:
    """Train ``neck_spec`` in the search regime on ``train_split``, track ``split`` (OPE; its first ``limit``
    sequences if given): the proxy's fitness is the AO."""
    start = time.perf_counter()
    with torch_threads(settings.threads):
        net, losses = train_search(settings, data_root, baseline_ckpt, neck_spec, seed, train_split)
        scores = track_split(make_tracker(net, settings), data_root, split, limit)
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "fitness": scores["ao"],
        "ao": scores["ao"],
        "sr50": scores["sr50"],
        "sr75": scores["sr75"],
        "fps": scores.get("speed_fps", -1.0),
        "train_loss": float(np.mean(tail)),
        "seconds": time.perf_counter() - start,
    }
