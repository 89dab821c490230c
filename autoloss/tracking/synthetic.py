"""A deterministic generator of synthetic tracking sequences in the GOT-10k layout.

Each sequence: a textured background (gradient, smooth noise, a few shapes) seen by a slowly panning
camera; a textured target (stripes, checker, blobs or rings, in its own colours, on a rectangle or an
ellipse) moving smoothly (a random walk with momentum, bouncing off the borders) while its size and
aspect drift; look-alike distractors (the target's pattern with jittered colours, moving on their own,
passing in front of or behind it); and, with some probability, an occluder crossing over the target.
The visible share of the target is measured on the drawn pixels and written to ``cover.label``
(``round(8 * visible)``, 0 only when fully hidden) and ``absence.label`` (1 when fully hidden).

Written per split (``root/<split>/``, the layout :mod:`autoloss.tracking.dataset` and the GOT-10k
toolkit read)::

    list.txt
    <name>/00000001.jpg ...  groundtruth.txt  absence.label  cover.label  cut_by_image.label  meta_info.ini
    synthetic.json           the parameters, written last (a complete split with the same parameters is
                             not regenerated)

Seeds come from ``numpy.random.SeedSequence(seed, spawn_key=(split index, sequence index))``: distinct
for every (split, sequence), so no sequence repeats across splits. The same call writes byte-identical
files (Pillow's JPEG encoder is deterministic at a fixed quality).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from autoloss.errors import UserError
from autoloss.files import generated_folder, write_atomic

GENERATOR_VERSION = 1
MANIFEST = "synthetic.json"
SPLITS = ("weights", "architecture", "holdout", "verify", "test")
DEFAULT_SIZES = {"weights": 32, "architecture": 16, "holdout": 16, "verify": 8, "test": 16}
PATTERNS = ("stripes", "checker", "blobs", "rings")
SHAPES = ("rect", "ellipse")
HIDDEN_BELOW = 0.02  # a visible share below this counts as fully hidden (cover 0, absent)


@dataclass(frozen=True)
class SyntheticSettings:
    """What one split's sequences look like. Sizes and speeds are fractions of the frame side."""

    sequences: int = 8
    frames: int = 30
    size: int = 128  # frame side in pixels (square frames)
    target_size: tuple[float, float] = (0.14, 0.30)  # sqrt(w * h) of the target box
    aspect_range: tuple[float, float] = (0.5, 2.0)  # w / h
    speed: float = 0.025  # typical target speed per frame
    momentum: float = 0.85  # velocity persistence of the random walk (0: jittery, 1: straight)
    scale_change: float = 0.03  # per-frame std of the log-size drift
    aspect_change: float = 0.03  # per-frame std of the log-aspect drift
    appearance_change: float = 0.02  # per-frame drift of the pattern's phase (cycles)
    distractors: int = 1  # look-alike objects per sequence
    distractor_speed: float = 0.025
    occlusion_probability: float = 0.4  # chance that an occluder crosses the target
    camera_pan: float = 0.004  # background drift per frame
    sensor_noise: float = 2.5  # std of the per-pixel noise (0..255 scale)
    jpeg_quality: int = 90
    motion: str = field(default="smooth")  # a word for meta_info.ini

    def __post_init__(self) -> None:
        problems = []
        if self.sequences < 1:
            problems.append("sequences must be >= 1")
        if self.frames < 2:
            problems.append("frames must be >= 2")
        if self.size < 32:
            problems.append("size must be >= 32 pixels")
        low, high = self.target_size
        if not 0.02 <= low <= high <= 0.5:
            problems.append("target_size must satisfy 0.02 <= low <= high <= 0.5")
        a_low, a_high = self.aspect_range
        if not 0.2 <= a_low <= a_high <= 5.0:
            problems.append("aspect_range must satisfy 0.2 <= low <= high <= 5")
        if not 0.0 <= self.momentum < 1.0:
            problems.append("momentum must be in [0, 1)")
        if min(self.speed, self.distractor_speed, self.scale_change, self.aspect_change,
               self.appearance_change, self.camera_pan, self.sensor_noise) < 0:
            problems.append("speeds, drifts and noise must be >= 0")
        if self.distractors < 0:
            problems.append("distractors must be >= 0")
        if not 0.0 <= self.occlusion_probability <= 1.0:
            problems.append("occlusion_probability must be in [0, 1]")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append("jpeg_quality must be in 1..100")
        if problems:
            raise UserError("synthetic tracking settings: " + "; ".join(problems))


def split_settings(split: str, sequences: int, frames: int, size: int = 128) -> SyntheticSettings:
    """The settings of a split: "holdout" moves faster, more erratically and with more distractors."""
    _split_index(split)
    base = SyntheticSettings(sequences=sequences, frames=frames, size=size)
    if split == "holdout":
        return replace(
            base,
            speed=0.05,
            momentum=0.7,
            scale_change=0.05,
            aspect_change=0.04,
            distractors=3,
            distractor_speed=0.045,
            occlusion_probability=0.5,
            motion="fast",
        )
    return base


@dataclass(frozen=True)
class SyntheticSequence:
    """One rendered sequence, before it is written: raw frames and what was drawn."""

    name: str
    frames: np.ndarray  # (N, size, size, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) float64 x, y, w, h of the target
    visible_fraction: np.ndarray  # (N,) share of the target's pixels left visible
    cover: np.ndarray  # (N,) int 0..8
    absent: np.ndarray  # (N,) bool


def sequence_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed of sequence ``index`` of ``split``: distinct for every (seed, split, index)."""
    return np.random.SeedSequence(int(seed), spawn_key=(_split_index(split), int(index)))


def sequence_name(split: str, index: int) -> str:
    return f"SYN_{split}_{index + 1:06d}"


def make_sequence(
    settings: SyntheticSettings, split: str, index: int, seed: int = 0, draw_target: bool = True
) -> SyntheticSequence:
    """Plan and render sequence ``index`` of ``split`` (``draw_target=False``: the same frames without
    the target, everything else identical; for checking the labels against the pixels)."""
    rng = np.random.default_rng(sequence_seed(seed, split, index))
    plan = _plan(rng, settings)
    frames, visible = _render(plan, settings, draw_target)
    cover = np.where(visible < HIDDEN_BELOW, 0, np.clip(np.round(8 * visible), 1, 8)).astype(np.int64)
    return SyntheticSequence(
        name=sequence_name(split, index),
        frames=frames,
        boxes=plan.target.boxes.copy(),
        visible_fraction=visible,
        cover=cover,
        absent=cover == 0,
    )


def write_sequences(folder: str | Path, settings: SyntheticSettings, split: str, seed: int = 0) -> Path:
    """Write ``settings.sequences`` sequences of ``split`` into ``folder`` (with list.txt); return it.

    A folder already holding this generator's output for the same parameters is left as it is; one
    holding other parameters is replaced; a non-empty folder that is not this generator's is refused.
    """
    folder = Path(folder)
    params = {
        "generator": "autoloss.tracking.synthetic",
        "version": GENERATOR_VERSION,
        "split": split,
        "seed": int(seed),
        "settings": asdict(settings),
    }
    manifest = folder / MANIFEST
    if generated_folder(folder, MANIFEST, params["generator"], "synthetic tracking data"):  # ours: kept or redone
        try:
            if json.loads(manifest.read_text(encoding="utf-8")) == json.loads(json.dumps(params)):
                return folder
        except (OSError, ValueError):
            pass
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # ours from now on, incomplete until the full manifest is written last
    write_atomic(manifest, json.dumps({"generator": params["generator"], "complete": False}) + "\n")
    names = []
    for index in range(settings.sequences):
        sequence = make_sequence(settings, split, index, seed)
        _write_sequence(folder / sequence.name, sequence, settings)
        names.append(sequence.name)
    (folder / "list.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    write_atomic(manifest, json.dumps(params, indent=2, sort_keys=True) + "\n")
    return folder


def generate_split(
    root: str | Path,
    split: str,
    sequences: int,
    frames: int,
    size: int = 128,
    seed: int = 0,
    folder: str | None = None,
) -> Path:
    """Write ``root/<split>/`` (or ``root/<folder>/``, e.g. "val" for the GOT-10k toolkit) and return it."""
    settings = split_settings(split, sequences, frames, size)
    return write_sequences(Path(root) / (folder or split), settings, split, seed)


def generate_dataset(
    root: str | Path,
    sizes: dict[str, int] | None = None,
    frames: int = 30,
    size: int = 128,
    seed: int = 0,
) -> dict[str, Path]:
    """Write every split (``sizes``: sequences per split, missing splits take DEFAULT_SIZES, 0 skips one)."""
    sizes = dict(DEFAULT_SIZES if sizes is None else {**DEFAULT_SIZES, **sizes})
    unknown = sorted(set(sizes) - set(SPLITS))
    if unknown:
        raise UserError(f"unknown synthetic tracking splits {unknown}; choose from {list(SPLITS)}")
    check_folders(root, [split for split in SPLITS if sizes[split] > 0])  # before any split is written
    return {
        split: generate_split(root, split, sizes[split], frames, size, seed)
        for split in SPLITS
        if sizes[split] > 0
    }


def check_folders(root: str | Path, splits=SPLITS) -> None:
    """Refuse (UserError) a data root where a split's folder is neither absent, empty nor this generator's."""
    for split in splits:
        generated_folder(Path(root) / split, MANIFEST, "autoloss.tracking.synthetic", "synthetic tracking data")


# --------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Pattern:
    kind: str
    colours: np.ndarray  # (K, 3) float, 0..255
    frequency: float
    angle: float
    phase: float
    drift: float
    blob_centres: np.ndarray  # (B, 2) in unit box coordinates
    blob_radii: np.ndarray  # (B,)


@dataclass(frozen=True)
class _Layer:
    boxes: np.ndarray  # (N, 4) x, y, w, h
    shape: str
    pattern: _Pattern
    drawn: np.ndarray  # (N,) bool


@dataclass(frozen=True)
class _Plan:
    background: np.ndarray  # (C, C, 3) float32 canvas
    offsets: np.ndarray  # (N, 2) int crop offsets (x, y) into the canvas
    back: tuple[_Layer, ...]  # drawn before the target
    target: _Layer
    front: tuple[_Layer, ...]  # drawn over the target (distractors in front, the occluder last)
    noise_seed: int


def _plan(rng: np.random.Generator, s: SyntheticSettings) -> _Plan:
    n, side = s.frames, s.size
    pan = s.camera_pan * side
    margin = int(math.ceil(pan * n)) + 2
    canvas = side + 2 * margin
    background = _background(rng, canvas)
    start = rng.uniform(0, 2 * margin, size=2)
    heading = rng.uniform(0, 2 * np.pi)
    steps = np.arange(n)[:, None] * pan * np.array([math.cos(heading), math.sin(heading)])
    offsets = np.clip(np.round(start + steps), 0, 2 * margin).astype(np.int64)

    target_pattern = _random_pattern(rng, s.appearance_change)
    target_shape = SHAPES[int(rng.integers(len(SHAPES)))]
    target_boxes = _trajectory(rng, s, s.speed, s.target_size)
    target = _Layer(target_boxes, target_shape, target_pattern, np.ones(n, dtype=bool))

    back: list[_Layer] = []
    front: list[_Layer] = []
    for _ in range(s.distractors):
        pattern = _look_alike(rng, target_pattern)
        boxes = _trajectory(rng, s, s.distractor_speed, s.target_size, avoid=target_boxes[0])
        layer = _Layer(boxes, target_shape, pattern, np.ones(n, dtype=bool))
        (front if rng.random() < 0.5 else back).append(layer)
    if rng.random() < s.occlusion_probability:
        front.append(_occluder(rng, s, target_boxes))
    # The first frame (the tracker's initialisation) always shows the whole target.
    front = [_spare_first_frame(layer, target_boxes[0]) for layer in front]
    noise_seed = int(rng.integers(2**31))
    return _Plan(background, offsets, tuple(back), target, tuple(front), noise_seed)


def _background(rng: np.random.Generator, canvas: int) -> np.ndarray:
    ys, xs = np.mgrid[0:canvas, 0:canvas].astype(np.float32) / canvas
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle))[..., None]
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    low, high = rng.uniform(20, 235, size=(2, 3)).astype(np.float32)
    image = low * (1 - ramp) + high * ramp
    for cells, amplitude in ((4, 45.0), (12, 25.0), (32, 12.0)):
        image += amplitude * _smooth_noise(rng, canvas, cells)
    for _ in range(int(rng.integers(3, 7))):
        width, height = rng.uniform(0.08, 0.4, size=2) * canvas
        x, y = rng.uniform(-0.1, 1.0, size=2) * canvas
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        window, alpha, _, _ = _coverage((x, y, width, height), shape, canvas)
        if window is None:
            continue
        strength = float(rng.uniform(0.4, 0.9))
        region = image[window]
        region += (colour - region) * (alpha[..., None] * strength)
    return np.clip(image, 0, 255).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """(side, side, 3) noise in [-1, 1], bilinearly interpolated from a (cells + 1)^2 grid."""
    grid = rng.uniform(-1, 1, size=(cells + 1, cells + 1, 3)).astype(np.float32)
    coords = (np.arange(side, dtype=np.float32) + 0.5) * cells / side
    index = np.minimum(coords.astype(np.int64), cells - 1)
    frac = (coords - index)[:, None]
    rows = grid[index] * (1 - frac[..., None]) + grid[index + 1] * frac[..., None]  # (side, cells+1, 3)
    cols = rows[:, index] * (1 - frac.T[..., None]) + rows[:, index + 1] * frac.T[..., None]
    return cols


def _random_pattern(rng: np.random.Generator, drift: float) -> _Pattern:
    kind = PATTERNS[int(rng.integers(len(PATTERNS)))]
    colours = rng.uniform(0, 255, size=(3, 3))
    # Keep the pattern's two main colours apart so the texture is visible.
    while np.abs(colours[0] - colours[1]).sum() < 150:
        colours[1] = rng.uniform(0, 255, size=3)
    blobs = int(rng.integers(2, 5))
    return _Pattern(
        kind=kind,
        colours=colours,
        frequency=float(rng.uniform(2.0, 4.5)),
        angle=float(rng.uniform(0, np.pi)),
        phase=float(rng.uniform(0, 1)),
        drift=float(drift * rng.choice([-1.0, 1.0])),
        blob_centres=rng.uniform(0.15, 0.85, size=(blobs, 2)),
        blob_radii=rng.uniform(0.1, 0.22, size=blobs),
    )


def _look_alike(rng: np.random.Generator, pattern: _Pattern) -> _Pattern:
    """The target's pattern with slightly different colours, frequency, angle and phase."""
    return replace(
        pattern,
        colours=np.clip(pattern.colours + rng.normal(0, 14, size=pattern.colours.shape), 0, 255),
        frequency=pattern.frequency * float(rng.uniform(0.85, 1.15)),
        angle=pattern.angle + float(rng.normal(0, 0.3)),
        phase=float(rng.uniform(0, 1)),
        blob_centres=np.clip(pattern.blob_centres + rng.normal(0, 0.05, size=pattern.blob_centres.shape), 0.1, 0.9),
    )


def _trajectory(
    rng: np.random.Generator,
    s: SyntheticSettings,
    speed: float,
    size_range: tuple[float, float],
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """(N, 4) boxes inside the frame: momentum random walk of the centre, drifting size and aspect."""
    n, side = s.frames, float(s.size)
    log_size = np.log(np.array(size_range) * side)
    log_aspect = np.log(np.array(s.aspect_range))
    size = rng.uniform(*log_size)
    aspect = rng.uniform(*log_aspect)
    w, h = _box_sides(size, aspect, side)
    centre = _start_centre(rng, w, h, side, avoid)
    step = speed * side
    velocity = rng.normal(0, step, size=2)
    boxes = np.empty((n, 4))
    for t in range(n):
        if t > 0:
            velocity = s.momentum * velocity + math.sqrt(1 - s.momentum**2) * rng.normal(0, step, size=2)
            size = _reflect(size + rng.normal(0, s.scale_change), *log_size)
            aspect = _reflect(aspect + rng.normal(0, s.aspect_change), *log_aspect)
            w, h = _box_sides(size, aspect, side)
            centre = centre + velocity
            for axis, extent in ((0, w), (1, h)):
                low, high = extent / 2, side - extent / 2
                if centre[axis] < low:
                    centre[axis] = 2 * low - centre[axis]
                    velocity[axis] = abs(velocity[axis])
                elif centre[axis] > high:
                    centre[axis] = 2 * high - centre[axis]
                    velocity[axis] = -abs(velocity[axis])
                centre[axis] = min(max(centre[axis], low), high)
        boxes[t] = (centre[0] - w / 2, centre[1] - h / 2, w, h)
    return boxes


def _box_sides(log_size: float, log_aspect: float, side: float) -> tuple[float, float]:
    size, root_aspect = math.exp(log_size), math.exp(log_aspect / 2)
    return min(size * root_aspect, 0.9 * side), min(size / root_aspect, 0.9 * side)


def _reflect(value: float, low: float, high: float) -> float:
    if value < low:
        value = 2 * low - value
    if value > high:
        value = 2 * high - value
    return min(max(value, low), high)


def _start_centre(
    rng: np.random.Generator, w: float, h: float, side: float, avoid: np.ndarray | None
) -> np.ndarray:
    centre = rng.uniform([w / 2, h / 2], [side - w / 2, side - h / 2])
    if avoid is None:
        return centre
    for _ in range(20):  # start away from the target when there is room
        if not _overlap((centre[0] - w / 2, centre[1] - h / 2, w, h), avoid):
            break
        centre = rng.uniform([w / 2, h / 2], [side - w / 2, side - h / 2])
    return centre


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _occluder(rng: np.random.Generator, s: SyntheticSettings, target: np.ndarray) -> _Layer:
    """A differently textured object crossing the target's path around a random middle frame."""
    n = s.frames
    middle = int(rng.integers(max(1, n // 3), max(2, (3 * n) // 4 + 1)))
    extent = target[:, 2:].max(axis=0)
    hide = rng.random() < 0.7  # big enough to hide the target completely, or only a part
    factor = rng.uniform(1.5, 2.2, size=2) if hide else rng.uniform(0.45, 0.8, size=2)
    w, h = extent * factor
    centre_mid = target[middle, :2] + target[middle, 2:] / 2
    if not hide:  # a partial occluder passes off-centre
        centre_mid = centre_mid + rng.uniform(-0.3, 0.3, size=2) * target[middle, 2:]
    heading = rng.uniform(0, 2 * np.pi)
    crossing = float(rng.uniform(max(3.0, n / 6), max(4.0, n / 3)))  # frames to move by its own size
    # Fast enough to start clear of the target in the first frame (a centre distance of both extents).
    clearance = 1.1 * (max(w, h) + float(extent.max()) + float(np.linalg.norm(centre_mid - target[0, :2] - target[0, 2:] / 2)))
    speed = max(max(w, h) / crossing, clearance / middle)
    direction = np.array([math.cos(heading), math.sin(heading)])
    times = np.arange(n) - middle
    centres = centre_mid + times[:, None] * speed * direction
    boxes = np.column_stack([centres - np.array([w, h]) / 2, np.full(n, w), np.full(n, h)])
    pattern = _random_pattern(rng, 0.0)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    return _Layer(boxes, shape, pattern, np.ones(n, dtype=bool))


def _spare_first_frame(layer: _Layer, first_target: np.ndarray) -> _Layer:
    if not _overlap(layer.boxes[0], first_target):
        return layer
    drawn = layer.drawn.copy()
    drawn[0] = False
    return replace(layer, drawn=drawn)


# -------------------------------------------------------------------------------------- rendering


def _render(plan: _Plan, s: SyntheticSettings, draw_target: bool) -> tuple[np.ndarray, np.ndarray]:
    n, side = s.frames, s.size
    noise_rng = np.random.default_rng(plan.noise_seed)
    frames = np.empty((n, side, side, 3), dtype=np.uint8)
    visible = np.empty(n)
    for t in range(n):
        ox, oy = plan.offsets[t]
        image = plan.background[oy : oy + side, ox : ox + side].copy()
        for layer in plan.back:
            _paint(image, layer, t)
        target_alpha = np.zeros((side, side), dtype=np.float32)
        window, alpha, u, v = _coverage(plan.target.boxes[t], plan.target.shape, side)
        if window is not None:
            target_alpha[window] = alpha
            if draw_target:
                _blend(image, window, alpha, _colour(plan.target.pattern, u, v, t))
        full = float(target_alpha.sum())
        for layer in plan.front:
            covered = _paint(image, layer, t)
            if covered is not None:
                target_alpha[covered[0]] *= 1 - covered[1]
        visible[t] = float(target_alpha.sum()) / full if full > 0 else 0.0
        if s.sensor_noise > 0:
            image += np.float32(s.sensor_noise) * noise_rng.standard_normal(size=image.shape, dtype=np.float32)
        frames[t] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return frames, np.clip(visible, 0.0, 1.0)


def _paint(image: np.ndarray, layer: _Layer, t: int):
    if not layer.drawn[t]:
        return None
    window, alpha, u, v = _coverage(layer.boxes[t], layer.shape, image.shape[0])
    if window is None:
        return None
    _blend(image, window, alpha, _colour(layer.pattern, u, v, t))
    return window, alpha


def _blend(image: np.ndarray, window, alpha: np.ndarray, colour: np.ndarray) -> None:
    region = image[window]
    region += (colour - region) * alpha[..., None]


def _coverage(box, shape: str, side: int):
    """The pixel window a box touches, the box's per-pixel coverage (1-pixel soft edge) and the unit
    box coordinates (u, v) of the pixel centres; window None when nothing of it is in the image."""
    x, y, w, h = (float(value) for value in box)
    x0, y0 = max(int(math.floor(x)), 0), max(int(math.floor(y)), 0)
    x1, y1 = min(int(math.ceil(x + w)), side), min(int(math.ceil(y + h)), side)
    if x1 <= x0 or y1 <= y0 or w <= 0 or h <= 0:
        return None, None, None, None
    px = np.arange(x0, x1, dtype=np.float32) + 0.5
    py = np.arange(y0, y1, dtype=np.float32) + 0.5
    if shape == "rect":
        ax = np.clip(np.minimum(px - x, x + w - px) + 0.5, 0, 1)
        ay = np.clip(np.minimum(py - y, y + h - py) + 0.5, 0, 1)
        alpha = ay[:, None] * ax[None, :]
    else:
        dx = (px - (x + w / 2)) / (w / 2)
        dy = (py - (y + h / 2)) / (h / 2)
        radius = np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
        alpha = np.clip((1 - radius) * (min(w, h) / 2) + 0.5, 0, 1)
    u = np.broadcast_to(((px - x) / w)[None, :], alpha.shape)
    v = np.broadcast_to(((py - y) / h)[:, None], alpha.shape)
    return (slice(y0, y1), slice(x0, x1)), alpha.astype(np.float32), u, v


def _colour(p: _Pattern, u: np.ndarray, v: np.ndarray, t: int) -> np.ndarray:
    """(H, W, 3) float32 colours of pattern ``p`` at unit coordinates (u, v) in frame ``t``."""
    phase = p.phase + p.drift * t
    c0, c1, c2 = (c.astype(np.float32) for c in p.colours)
    if p.kind == "stripes":
        along = u * math.cos(p.angle) + v * math.sin(p.angle)
        mix = np.clip(1.5 * np.sin(2 * np.pi * (along * p.frequency + phase)) + 0.5, 0, 1)
    elif p.kind == "checker":
        cells = np.floor(u * p.frequency + phase) + np.floor(v * p.frequency)
        mix = (cells % 2).astype(np.float32)
    elif p.kind == "rings":
        radius = np.sqrt((u - 0.5) ** 2 + (v - 0.5) ** 2)
        mix = np.clip(1.5 * np.sin(2 * np.pi * (radius * 2 * p.frequency + phase)) + 0.5, 0, 1)
    else:  # blobs on a base colour
        colour = np.broadcast_to(c0, u.shape + (3,)).copy()
        shift = 0.08 * math.sin(2 * np.pi * phase)
        for k, ((cu, cv), radius) in enumerate(zip(p.blob_centres, p.blob_radii)):
            weight = np.exp(-((u - cu - shift) ** 2 + (v - cv) ** 2) / (2 * radius**2))[..., None]
            colour += ((c1 if k % 2 == 0 else c2) - colour) * weight
        return colour.astype(np.float32)
    mix = mix[..., None].astype(np.float32)
    return c0 * (1 - mix) + c1 * mix


# ---------------------------------------------------------------------------------------- writing


def _write_sequence(folder: Path, sequence: SyntheticSequence, s: SyntheticSettings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(sequence.frames, start=1):
        Image.fromarray(frame).save(folder / f"{index:08d}.jpg", format="JPEG", quality=s.jpeg_quality, subsampling=0)
    lines = [",".join(f"{value:.4f}" for value in box) for box in sequence.boxes]
    (folder / "groundtruth.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_labels(folder / "absence.label", sequence.absent.astype(np.int64))
    _write_labels(folder / "cover.label", sequence.cover)
    _write_labels(folder / "cut_by_image.label", np.zeros(len(sequence.boxes), dtype=np.int64))
    meta = [
        "[METAINFO]",
        "url: synthetic",
        "begin_time: 00:00:00",
        f"end_time: 00:00:{min(len(sequence.boxes) // 10, 59):02d}",
        "anno_fps: 10Hz",
        "object_class: synthetic target",
        f"motion_class: {s.motion}",
        "major_class: synthetic",
        "root_class: synthetic",
        f"motion_adverb: {'quickly' if s.motion == 'fast' else 'slowly'}",
        f"resolution: ({s.size}, {s.size})",
    ]
    (folder / "meta_info.ini").write_text("\n".join(meta) + "\n", encoding="utf-8")


def _write_labels(path: Path, values: np.ndarray) -> None:
    path.write_text("\n".join(str(int(value)) for value in values) + "\n", encoding="utf-8")


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise UserError(f"unknown synthetic tracking split {split!r}; choose from {list(SPLITS)}")
    return SPLITS.index(split)
