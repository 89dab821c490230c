"""The GOT-10k metrics, computed as the GOT-10k toolkit (PyPI ``got10k``) computes them.

Per sequence: the IoU of the predicted and the ground-truth box on frames 1..N-1 (the first frame,
where the tracker is initialised, is skipped), both boxes first clipped to the image as the
toolkit's ``rect_iou(bound=(W, H))`` does (x, y to [0, W] x [0, H], then w, h to what is left of the
image: a box starting left of or above the image is moved inside with its size kept, not cut; its
``poly_iou`` cuts instead, and its GOT-10k evaluation uses ``rect_iou``), only on frames where the target is
visible (GOT-10k: cover > 0). Over a dataset the IoUs are concatenated (frame-weighted): AO is their
mean, a success rate at threshold t is the share of IoUs strictly above t; the success curve uses 101
thresholds linspace(0, 1, 101), SR0.5 is mean(IoU > 0.5) and SR0.75 the curve at index 75. Speed is
mean(1 / t) over the positive, non-NaN per-frame times.

Result files use the toolkit's layout so either side can read the other's::

    <tracker_dir>/<sequence>/<sequence>_001.txt   x,y,w,h per frame, comma-separated (repetition 1)
    <tracker_dir>/<sequence>/<sequence>_time.txt  seconds per frame
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from autoloss.errors import UserError

THRESHOLDS = np.linspace(0, 1, 101)


def iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of two (N, 4) x, y, w, h arrays (the toolkit's eps in the union, clipped to [0, 1])."""
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1:] != (4,):
        raise ValueError(f"iou needs two arrays of x, y, w, h rows of one shape, got {a.shape} and {b.shape}")
    left = np.maximum(a[..., 0], b[..., 0])
    top = np.maximum(a[..., 1], b[..., 1])
    right = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
    bottom = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
    inter = np.maximum(right - left, 0) * np.maximum(bottom - top, 0)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)


def clip_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """A copy of x, y, w, h rows clipped to a (width, height) image the way the toolkit bounds them:
    x, y into [0, W] x [0, H] first, then w, h to at most what is left right of / below x, y (so a box
    starting at x < 0 is shifted to 0 with its width kept, not cut)."""
    width, height = image_size
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[:, 0] = np.clip(out[:, 0], 0, width)
    out[:, 1] = np.clip(out[:, 1], 0, height)
    out[:, 2] = np.clip(out[:, 2], 0, width - out[:, 0])
    out[:, 3] = np.clip(out[:, 3], 0, height - out[:, 1])
    return out


def sequence_ious(
    pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, image_size: tuple[int, int]
) -> np.ndarray:
    """IoUs of one sequence on frames 1..N-1 where ``visible`` (boxes clipped to the image)."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    if pred.ndim != 2 or pred.shape[1] != 4 or pred.shape != gt.shape:
        raise ValueError(f"predictions {pred.shape} and ground truth {gt.shape} must both be (N, 4)")
    if visible.shape != (len(gt),):
        raise ValueError(f"visible must have one flag per frame ({len(gt)}), got shape {visible.shape}")
    keep = visible[1:]
    pred, gt = pred[1:][keep], gt[1:][keep]
    if not np.isfinite(gt).all():
        raise ValueError("the ground truth is unknown (NaN) on a visible frame: this split cannot be scored")
    if not np.isfinite(pred).all():
        raise ValueError("a predicted box is not finite")
    return iou(clip_boxes(pred, image_size), clip_boxes(gt, image_size))


def scores_from_ious(ious: np.ndarray, times: np.ndarray | None = None) -> dict:
    """AO, SR0.5, SR0.75 and the success curve of concatenated IoUs (and the speed when times are given)."""
    ious = np.asarray(ious, dtype=np.float64).ravel()
    if ious.size == 0:
        raise ValueError("no visible frames to score")
    curve = np.mean(ious[:, None] > THRESHOLDS[None, :], axis=0)
    result = {
        "ao": float(np.mean(ious)),
        "sr50": float(np.mean(ious > 0.5)),
        "sr75": float(curve[75]),
        "curve": curve,
        "frames": int(ious.size),
    }
    if times is not None:
        result["speed_fps"] = speed_fps(times)
    return result


def speed_fps(times: np.ndarray) -> float:
    """mean(1 / t) over the positive, non-NaN seconds per frame; -1 when there are none (as the toolkit)."""
    times = np.asarray(times, dtype=np.float64).ravel()
    times = times[~np.isnan(times)]
    times = times[times > 0]
    return float(np.mean(1.0 / times)) if times.size else -1.0


def got10k_scores(
    per_sequence: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]],
    times: Sequence[np.ndarray] | None = None,
) -> dict:
    """The dataset's scores from (pred, gt, visible, image_size) per sequence, IoUs concatenated.

    Returns ``{"ao", "sr50", "sr75", "curve" (101 floats), "frames", "sequence_ao" (list)}`` and
    ``"speed_fps"`` when ``times`` (seconds per frame, one array per sequence) are given.
    """
    if not per_sequence:
        raise ValueError("no sequences to score")
    ious = [sequence_ious(*entry) for entry in per_sequence]
    joined_times = None
    if times is not None:
        if len(times) != len(per_sequence):
            raise ValueError(f"{len(times)} time arrays for {len(per_sequence)} sequences")
        joined_times = np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in times])
    result = scores_from_ious(np.concatenate(ious), joined_times)
    result["sequence_ao"] = [float(np.mean(values)) if values.size else float("nan") for values in ious]
    return result


def write_results(
    tracker_dir: str | Path,
    sequence: str,
    boxes: np.ndarray,
    times: np.ndarray | None = None,
    repetition: int = 1,
) -> Path:
    """Write one sequence's boxes (and seconds per frame) in the toolkit's layout; return the box file."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) x, y, w, h rows, got {boxes.shape}")
    folder = Path(tracker_dir) / sequence
    folder.mkdir(parents=True, exist_ok=True)
    box_file = folder / f"{sequence}_{repetition:03d}.txt"
    np.savetxt(box_file, boxes, fmt="%.3f", delimiter=",")
    if times is not None:
        times = np.asarray(times, dtype=np.float64).ravel()
        if len(times) != len(boxes):
            raise ValueError(f"{len(times)} times for {len(boxes)} boxes")
        np.savetxt(folder / f"{sequence}_time.txt", times[:, None], fmt="%.8f", delimiter=",")
    return box_file


def read_results(
    tracker_dir: str | Path, sequence: str, repetition: int = 1
) -> tuple[np.ndarray, np.ndarray | None]:
    """(boxes (N, 4), times (N,) or None) of one sequence from the toolkit's layout."""
    folder = Path(tracker_dir) / sequence
    boxes = _read_table(folder / f"{sequence}_{repetition:03d}.txt", columns=4)
    time_file = folder / f"{sequence}_time.txt"
    times = None
    if time_file.exists():
        table = _read_table(time_file, columns=None, allow_nan=True)
        times = table[:, min(repetition, table.shape[1]) - 1]
    return boxes, times


def repetition_files(tracker_dir: str | Path, sequence: str) -> list[Path]:
    """The sequence's box files of every repetition (``<sequence>_NNN.txt``), in order."""
    folder = Path(tracker_dir) / sequence
    pattern = re.compile(re.escape(sequence) + r"_(\d+)\.txt$")
    if not folder.is_dir():
        return []
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name)))
    return [path for _, path in found]


def score_results(sequences, tracker_dir: str | Path) -> dict:
    """Score a tracker's result folder against :class:`~autoloss.tracking.dataset.TrackingSequence` s
    as the toolkit's report does: every repetition's IoUs are pooled, times from ``_time.txt``."""
    entries, times = [], []
    for sequence in sequences:
        files = repetition_files(tracker_dir, sequence.name)
        if not files:
            raise UserError(f"no results for sequence {sequence.name} in {Path(tracker_dir) / sequence.name}")
        for path in files:
            boxes = _read_table(path, columns=4)
            if boxes.shape != sequence.boxes.shape:
                raise UserError(f"{path} has {len(boxes)} boxes for {len(sequence.boxes)} frames")
            entries.append((boxes, sequence.boxes, sequence.visible(), sequence.image_size))
        time_file = Path(tracker_dir) / sequence.name / f"{sequence.name}_time.txt"
        if time_file.exists():
            times.append(_read_table(time_file, columns=None, allow_nan=True).ravel())
    ious = np.concatenate([sequence_ious(*entry) for entry in entries])
    return scores_from_ious(ious, np.concatenate(times) if times else np.empty(0))


def _read_table(path: Path, columns: int | None, allow_nan: bool = False) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"result file {path} is missing")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise UserError(f"result file {path} is empty")
    rows = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        fields = text.split(",") if "," in text else text.split()
        try:
            row = [float(field) for field in fields]
        except ValueError:
            raise UserError(f"{path} line {number}: {text!r} is not a row of numbers") from None
        if columns is not None and len(row) != columns:
            raise UserError(f"{path} line {number}: expected {columns} values, got {len(row)}")
        if not allow_nan and not all(math.isfinite(value) for value in row):
            raise UserError(f"{path} line {number}: {text!r} holds a value that is not finite")
        if rows and len(row) != len(rows[0]):
            raise UserError(f"{path} line {number}: {len(row)} values, the first line has {len(rows[0])}")
        rows.append(row)
    return np.array(rows, dtype=np.float64)
