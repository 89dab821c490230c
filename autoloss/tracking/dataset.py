"""Reader of GOT-10k-layout tracking folders.

The layout (GOT-10k's ``train``/``val``/``test`` folders, and what :mod:`autoloss.tracking.synthetic`
writes)::

    root/list.txt                  one sequence name per line
    root/<name>/00000001.jpg ...   the frames, numbered from 1 without gaps
    root/<name>/groundtruth.txt    x,y,w,h per frame (0-based pixels); the test split: the first line only
    root/<name>/absence.label      optional, 0/1 per frame (1: the target is absent)
    root/<name>/cover.label        optional, 0..8 per frame (visible share in eighths; 0: fully hidden)

Every problem with a folder is reported as one :class:`~autoloss.errors.UserError` line naming the
file (and the line, where there is one).
"""

from __future__ import annotations

import math
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from autoloss.errors import UserError

LIST_FILE = "list.txt"
GROUNDTRUTH_FILE = "groundtruth.txt"
ABSENCE_FILE = "absence.label"
COVER_FILE = "cover.label"
FRAME_PATTERN = re.compile(r"^(\d{8})\.jpg$")
MAX_COVER = 8
# Pixels a frame may have: PIL's own warning threshold (about 9459 x 9459); GOT-10k's frames are at most
# a few million pixels. A header that claims more is refused before anything decodes it.
MAX_FRAME_PIXELS = 89_478_485


@dataclass(frozen=True)
class TrackingSequence:
    """One sequence: its frames, the target's boxes and the optional visibility labels."""

    name: str
    frames: tuple[Path, ...]
    boxes: np.ndarray  # (N, 4) float64 x, y, w, h; rows of NaN where unknown (test split)
    absent: np.ndarray | None  # (N,) bool, from absence.label
    cover: np.ndarray | None  # (N,) int 0..8, from cover.label
    image_size: tuple[int, int]  # (width, height)

    def __len__(self) -> int:
        return len(self.frames)

    def visible(self) -> np.ndarray:
        """(N,) bool: cover > 0 where cover is known, else not absent, else every frame."""
        if self.cover is not None:
            return self.cover > 0
        if self.absent is not None:
            return ~self.absent
        return np.ones(len(self.frames), dtype=bool)

    @property
    def fully_annotated(self) -> bool:
        """True when every frame has a box (False for the test split's first-line-only files)."""
        return bool(np.isfinite(self.boxes).all())


def read_sequences(
    root: str | Path,
    subset: str | None = None,
    allow_first_only: bool | None = None,
    check_frames: bool = True,
) -> list[TrackingSequence]:
    """Read every sequence named in ``root/list.txt`` (or ``root/<subset>/list.txt``).

    ``allow_first_only`` accepts a groundtruth.txt of exactly one line (GOT-10k's test split: only
    the first box is given, the other rows become NaN); by default it is allowed only for
    ``subset == "test"``. ``check_frames`` opens every frame's header (all must decode as images of
    one size); with False only the first frame's header is read (faster on large datasets).
    """
    base = Path(root)
    folder = base / subset if subset is not None else base
    if allow_first_only is None:
        allow_first_only = subset == "test"
    if not base.is_dir():
        raise UserError(f"tracking data folder {base} does not exist or is not a directory")
    list_file = folder / LIST_FILE
    if not list_file.is_file():
        where = f"{folder}/{LIST_FILE}" if subset is None else f"{list_file} (subset {subset!r})"
        raise UserError(f"{folder} is not a GOT-10k-layout folder: no {where}")
    names = _read_list(list_file)
    for number, name in enumerate(names, start=1):
        if not (folder / name).is_dir():
            raise UserError(f"{list_file} line {number}: sequence folder {folder / name} does not exist")
    return [
        read_sequence(folder / name, allow_first_only=allow_first_only, check_frames=check_frames)
        for name in names
    ]


def read_sequence(folder: str | Path, allow_first_only: bool = False, check_frames: bool = True) -> TrackingSequence:
    """Read one GOT-10k sequence folder (see :func:`read_sequences`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"sequence folder {folder} does not exist")
    frames = _list_frames(folder)
    image_size = _frame_size(frames, check_all=check_frames)
    count = len(frames)
    boxes = _read_groundtruth(folder / GROUNDTRUTH_FILE, count, allow_first_only)
    absent = _read_label(folder / ABSENCE_FILE, count, 1)
    cover = _read_label(folder / COVER_FILE, count, MAX_COVER)
    sequence = TrackingSequence(
        name=folder.name,
        frames=frames,
        boxes=boxes,
        absent=None if absent is None else absent.astype(bool),
        cover=cover,
        image_size=image_size,
    )
    _check_boxes_in_frame(folder / GROUNDTRUTH_FILE, sequence)
    return sequence


def load_frame(path: str | Path) -> np.ndarray:
    """Decode one frame fully: an H x W x 3 uint8 RGB array (a UserError naming the file if it fails)."""
    path = Path(path)
    with _opened(path) as image:
        try:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as error:
            raise UserError(f"frame {path} does not decode as an image: {_one_line(error)}") from None


@contextmanager
def _opened(path: Path):
    """``Image.open(path)`` with every failure one UserError naming the file, and PIL's decompression-bomb
    warning and error turned into the same line (a header over :data:`MAX_FRAME_PIXELS` is refused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except FileNotFoundError:
            raise UserError(f"frame {path} does not exist") from None
        except Image.DecompressionBombError:
            raise UserError(f"frame {path}: its header claims more than {2 * MAX_FRAME_PIXELS} pixels (a "
                            f"decompression bomb?); frames may have at most {MAX_FRAME_PIXELS}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise UserError(f"frame {path} does not decode as an image: {_one_line(error)}") from None
        with image:
            width, height = image.size
            if width * height > MAX_FRAME_PIXELS:
                raise UserError(f"frame {path}: its header claims {width}x{height} = {width * height} pixels (a "
                                f"decompression bomb?); frames may have at most {MAX_FRAME_PIXELS}")
            yield image


def _read_list(list_file: Path) -> list[str]:
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {list_file}: {_one_line(error)}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise UserError(f"{list_file} names no sequences")
    names: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise UserError(f"{list_file} line {number}: empty line")
        if "/" in name or "\\" in name or name in (".", ".."):
            raise UserError(f"{list_file} line {number}: {name!r} is not a plain sequence folder name")
        if name in seen:
            raise UserError(f"{list_file} line {number}: sequence {name!r} is listed twice")
        seen.add(name)
        names.append(name)
    return names


def _list_frames(folder: Path) -> tuple[Path, ...]:
    numbered = []
    for path in folder.iterdir():
        match = FRAME_PATTERN.match(path.name)
        if match and path.is_file():
            numbered.append((int(match.group(1)), path))
    if not numbered:
        raise UserError(f"sequence folder {folder} holds no frames (expected 00000001.jpg, 00000002.jpg, ...)")
    numbered.sort()
    for expected, (number, path) in enumerate(numbered, start=1):
        if number != expected:
            raise UserError(
                f"sequence folder {folder}: frame {expected:08d}.jpg is missing (frames must be numbered 1..N without gaps)"
            )
    return tuple(path for _, path in numbered)


def _frame_size(frames: tuple[Path, ...], check_all: bool) -> tuple[int, int]:
    size = _header_size(frames[0])
    if check_all:
        for path in frames[1:]:
            other = _header_size(path)
            if other != size:
                raise UserError(
                    f"frame {path} is {other[0]}x{other[1]} but {frames[0].name} is {size[0]}x{size[1]}: "
                    "all frames of a sequence must have one size"
                )
    return size


def _header_size(path: Path) -> tuple[int, int]:
    with _opened(path) as image:
        width, height = image.size
    if width < 1 or height < 1:
        raise UserError(f"frame {path} has an empty size {width}x{height}")
    return int(width), int(height)


def _content_lines(path: Path, what: str) -> list[str]:
    """The file's lines, trailing blank lines dropped."""
    if not path.is_file():
        raise UserError(f"{what} {path} is missing")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {_one_line(error)}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _read_groundtruth(path: Path, count: int, allow_first_only: bool) -> np.ndarray:
    lines = _content_lines(path, "ground-truth file")
    if not lines:
        raise UserError(f"{path} is empty (expected one x,y,w,h line per frame)")
    first_only = allow_first_only and len(lines) == 1 and count > 1
    if len(lines) != count and not first_only:
        detail = " (or exactly one line for the test split)" if allow_first_only else ""
        raise UserError(f"{path} has {len(lines)} lines for {count} frames: expected one x,y,w,h line per frame{detail}")
    boxes = np.full((count, 4), np.nan, dtype=np.float64)
    for number, line in enumerate(lines, start=1):
        boxes[number - 1] = _parse_box(path, number, line)
    return boxes


def _parse_box(path: Path, number: int, line: str) -> list[float]:
    text = line.strip()
    if not text:
        raise UserError(f"{path} line {number}: empty line (expected x,y,w,h)")
    fields = text.split(",") if "," in text else text.split()
    if len(fields) != 4:
        raise UserError(f"{path} line {number}: expected 4 values x,y,w,h, got {len(fields)}: {text!r}")
    values = []
    for field in fields:
        try:
            value = float(field)
        except ValueError:
            raise UserError(f"{path} line {number}: {field.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise UserError(f"{path} line {number}: {field.strip()!r} is not a finite number")
        values.append(value)
    if values[2] < 0 or values[3] < 0:
        raise UserError(f"{path} line {number}: negative width or height in {text!r}")
    return values


def _read_label(path: Path, count: int, maximum: int) -> np.ndarray | None:
    if not path.exists():
        return None
    lines = _content_lines(path, "label file")
    if len(lines) != count:
        raise UserError(f"{path} has {len(lines)} lines for {count} frames: expected one label per frame")
    values = np.empty(count, dtype=np.int64)
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        try:
            value = int(text)
        except ValueError:
            # GOT-10k's files hold integers; accept "3.0" but nothing fractional.
            try:
                real = float(text)
            except ValueError:
                raise UserError(f"{path} line {number}: {text!r} is not an integer label") from None
            if not real.is_integer():
                raise UserError(f"{path} line {number}: {text!r} is not an integer label") from None
            value = int(real)
        if not 0 <= value <= maximum:
            raise UserError(f"{path} line {number}: label {value} is outside 0..{maximum}")
        values[number - 1] = value
    return values


def _check_boxes_in_frame(path: Path, sequence: TrackingSequence) -> None:
    """Where the target is visible its box must have a positive size and overlap the frame."""
    width, height = sequence.image_size
    known = np.isfinite(sequence.boxes).all(axis=1)
    x, y, w, h = sequence.boxes.T
    with np.errstate(invalid="ignore", over="ignore"):  # 1e308 + 1e308: refused below, not warned
        empty = (w <= 0) | (h <= 0)
        outside = (x >= width) | (y >= height) | (x + w <= 0) | (y + h <= 0)
    bad = known & sequence.visible() & (empty | outside)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        box = ",".join(f"{v:g}" for v in sequence.boxes[index])
        reason = "has a non-positive width or height" if empty[index] else f"lies outside the {width}x{height} frame"
        raise UserError(f"{path} line {index + 1}: box {box} {reason} where the target is visible")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
