"""The proxy tracker with a DARTS supernet in the neck slot, and its three data splits, for a differentiable search.

The search regime of :mod:`autoloss.tracking.train`, with the cell's 14 edges mixed: the baseline
checkpoint's backbone (frozen) computes the maps of every search batch once; fresh adapters, a
:class:`~autoloss.cell.supernet.CellSupernet` and a fresh classifier are trained on them.

- :class:`TrackerSupernet` holds the trained parts (adapters, supernet, classifier) and the model
  interface :class:`~autoloss.differentiable.search.DifferentiableSearch` calls (``arch_parameters``,
  ``weight_parameters``, ``mixing_weights``, ``fixed_mixing_weights``);
- :func:`split_maps`: the frozen backbone's maps of ``count`` deterministic batches of one split
  ("weights", "architecture" or "holdout"), kept in memory and next to the baseline checkpoint;
- :func:`supernet_loss`: PrDiMP's classifier loss of one cached batch (the same loss on every split;
  the weight split trains the weights, the architecture split alpha, the hold-out split measures the
  supernet and, with one-hot weights, the derived cell);
- :func:`build_supernet_search`: everything one seed's search needs, as a
  :class:`~autoloss.differentiable.worker.SupernetSetup`;
- :func:`ensure_architecture_split`: writes the synthetic "architecture" split when a synthetic data
  set lacks it (the evolutionary search does not use it);
- :data:`SUPERNET`: the tracking problem's supernet hooks (``Problem.supernet``) for the differentiable
  strategies: :func:`supernet_search` (in the worker) and :func:`prepare_architecture_split`.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from autoloss.cell.supernet import CellSupernet, architecture_parameters, weight_parameters
from autoloss.differentiable.worker import SupernetSetup
from autoloss.engine.protocols import Supernet
from autoloss.errors import UserError
from autoloss.files import write_atomic
from autoloss.tracking.backbone import InputAdapters
from autoloss.tracking.classifier import TargetClassifier
from autoloss.tracking.dataset import read_sequences
from autoloss.tracking.model import STRIDE
from autoloss.tracking.problem import worker_settings
from autoloss.tracking.sampling import PairSampler, SampleBatch
from autoloss.tracking.train import (
    TrackingSettings,
    batch_images,
    classification_loss,
    load_baseline,
    split_fingerprint,
    torch_threads,
)

SEARCH_SPLITS = ("weights", "architecture", "holdout")  # the roles of a differentiable search's data
DATA_SEED = 0  # every seed of a search sees the same batches; seeds differ in initialisation

_MAPS: dict[tuple, list] = {}


class TrackerSupernet(nn.Module):
    """Adapters -> CellSupernet -> classifier: the parts a differentiable search trains (backbone maps in)."""

    def __init__(self, settings: TrackingSettings, backbone_channels: tuple[int, int], skip_dropout: float = 0.0,
                 init_step: float = 1.0, init_reg: float = 0.05):
        super().__init__()
        self.adapters = InputAdapters(backbone_channels, settings.channels)
        self.neck = CellSupernet(settings.channels, skip_dropout=skip_dropout)
        self.classifier = TargetClassifier(self.neck.out_channels, settings.filter_size, STRIDE, init_step, init_reg)

    def classifier_features(self, stride8: torch.Tensor, stride16: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(self.neck(*self.adapters(stride8, stride16)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return architecture_parameters(self)

    def weight_parameters(self) -> list[nn.Parameter]:
        return weight_parameters(self)

    def mixing_weights(self) -> torch.Tensor:
        return self.neck.mixing_weights()

    def fixed_mixing_weights(self, weights: torch.Tensor):
        return self.neck.fixed_mixing_weights(weights)


def supernet_loss(model: nn.Module, entry: dict, settings: TrackingSettings) -> torch.Tensor:
    """The classifier loss (PrDiMP's KL over the filter iterates) of one cached batch."""
    device = next(model.parameters()).device
    batch = SampleBatch(None, entry["train_boxes"].to(device), None, entry["test_boxes"].to(device))
    return classification_loss(model, entry["stride8"].to(device).float(), entry["stride16"].to(device).float(),
                               batch, settings)


def ensure_architecture_split(settings: TrackingSettings, data_root: str | Path, sequences: int | None = None) -> Path:
    """``data_root/architecture``: kept when present; written when the data set is the synthetic one."""
    root = Path(data_root)
    folder = root / "architecture"
    if (folder / "list.txt").is_file():
        return folder
    if not (root / "weights" / "synthetic.json").is_file():
        raise UserError(f"a differentiable search needs an 'architecture' split: {folder} holds no list.txt "
                        "(alpha is trained on it, the weights on 'weights')")
    from autoloss.tracking.synthetic import generate_split

    count = sequences or max(settings.holdout_sequences, 2)
    return generate_split(root, "architecture", count, settings.sequence_frames, settings.frame_size,
                          settings.data_seed)


def split_maps(backbone_net: nn.Module, settings: TrackingSettings, data_root: str | Path, baseline_ckpt: str | Path,
               split: str, count: int, seed: int = DATA_SEED) -> list[dict]:
    """The frozen backbone's maps of batches ``0..count-1`` of the folder ``split`` (``settings.batch`` samples each)."""
    path = Path(baseline_ckpt)
    names = "crop_size search_factor frames max_gap train_jitter test_jitter scale_jitter batch".split()
    knobs = tuple((n, getattr(settings, n)) for n in names)
    key = (str(path.resolve()), path.stat().st_mtime_ns, split, split_fingerprint(data_root, split), knobs, count, seed)
    if key in _MAPS:
        return _MAPS[key]
    tag = hashlib.sha1(repr(key[2:]).encode()).hexdigest()[:12]
    cache_file = path.with_name(f"{path.stem}.supernet-{split}-{tag}.pt")
    entries = None
    if cache_file.is_file() and cache_file.stat().st_mtime_ns >= path.stat().st_mtime_ns:
        try:
            entries = torch.load(cache_file, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 (an unreadable cache is recomputed)
            entries = None
    if entries is None:
        sampler = PairSampler(read_sequences(data_root, split), settings.crop_size, settings.search_factor,
                              settings.frames, settings.max_gap, settings.train_jitter, settings.test_jitter,
                              settings.scale_jitter, seed)
        entries = []
        with torch.no_grad():
            for index in range(count):
                batch = sampler.batch(index, settings.batch)
                stride8, stride16 = backbone_net.backbone_maps(batch_images(batch).to(settings.device))
                entries.append({"stride8": stride8.cpu().half(), "stride16": stride16.cpu().half(),
                                "train_boxes": batch.train_boxes, "test_boxes": batch.test_boxes})
        write_atomic(cache_file, lambda file: torch.save(entries, file))
    _MAPS[key] = entries
    return entries


def _cycle(entries: list[dict], steps: int) -> Callable[[int], list[dict]]:
    """Epoch ``e`` takes ``steps`` consecutive entries from ``e * steps``, cycling over the pool."""
    return lambda epoch: [entries[(epoch * steps + i) % len(entries)] for i in range(steps)]


def build_supernet_search(settings: TrackingSettings, data_root: str | Path, baseline_ckpt: str | Path, *, seed: int,
                          steps_per_epoch: int | None = None, architecture_batches: int | None = None,
                          holdout_batches: int = 4, skip_dropout: float = 0.0,
                          splits: dict[str, str] | None = None) -> SupernetSetup:
    """The supernet tracker of ``seed`` (initialised from it) with the maps of its three splits.

    ``splits`` maps the roles "weights", "architecture" and "holdout" to folders of ``data_root``
    (default: folders of those names).

    Per epoch ``steps_per_epoch`` (default ``settings.pool``) weight-split and architecture-split
    batches, cycling over ``settings.pool`` and ``architecture_batches`` (default: the same) cached
    batches; the hold-out loss is the mean over ``holdout_batches`` fixed batches.
    """
    net = load_baseline(settings, baseline_ckpt).to(settings.device).eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    steps = steps_per_epoch or settings.pool
    folders = {role: role for role in SEARCH_SPLITS} | dict(splits or {})
    weights = split_maps(net, settings, data_root, baseline_ckpt, folders["weights"], settings.pool)
    arch = split_maps(net, settings, data_root, baseline_ckpt, folders["architecture"],
                      architecture_batches or settings.pool)
    holdout = split_maps(net, settings, data_root, baseline_ckpt, folders["holdout"], holdout_batches)
    torch.manual_seed(seed)
    model = TrackerSupernet(settings, net.backbone.out_channels, skip_dropout, net.init_step, net.init_reg)
    model.to(settings.device)
    return SupernetSetup(model, lambda m, entry: supernet_loss(m, entry, settings), _cycle(weights, steps),
                         _cycle(arch, steps), lambda epoch: holdout, weight_lr=settings.lr)


# ------------------------------------------------------------------- the tracking problem's supernet hooks


@contextmanager
def supernet_search(task: dict, seed: int, *, steps_per_epoch: int | None = None,
                    architecture_batches: int | None = None, holdout_batches: int = 4,
                    skip_dropout: float = 0.0) -> Iterator[SupernetSetup]:
    """Worker side: the supernet tracker of the stored ``task`` for ``seed``, built and used with the
    task's torch threads (the worker's device: its GPU if it has one)."""
    settings = worker_settings(task)
    splits = task.get("splits", {})
    with torch_threads(settings.threads):
        yield build_supernet_search(settings, task["data_root"], task["baseline"], seed=seed,
                                    steps_per_epoch=steps_per_epoch, architecture_batches=architecture_batches,
                                    holdout_batches=holdout_batches, skip_dropout=skip_dropout,
                                    splits={role: splits.get(role, role) for role in SEARCH_SPLITS})


def prepare_architecture_split(task: dict) -> None:
    """Before a differentiable search: its architecture split must exist (written for a synthetic data set)."""
    folder = task.get("splits", {}).get("architecture", "architecture")
    root = Path(task["data_root"])
    if not (root / folder / "list.txt").is_file():
        if folder != "architecture":
            raise UserError(f"a differentiable search needs its architecture split: {root / folder} holds no list.txt")
        ensure_architecture_split(worker_settings(task), root)


SUPERNET = Supernet(search=supernet_search, prepare=prepare_architecture_split)
