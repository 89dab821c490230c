"""Reading and validating a user's COCO-format detection dataset directory.

Every problem found is raised as one :class:`autoloss.errors.UserError` whose message names the
file (or directory) and the problem, so the CLI can print it as a single line. Before any training
the whole dataset is checked: every box finite, of positive size and inside its image; every image
with a declared width and height of at least ``min_side`` pixels, present, decodable (its header is
read with Pillow) and of the declared size. A message names the first problem and counts the
images and annotations that have one (what a lenient reading would have to drop).

Accepted layouts of ``data_dir``::

    annotations/instances_train*.json   + train*/ image folder   (e.g. instances_train2017.json, train2017/)
    annotations/instances_val*.json     + val*/   image folder   (optional: see below)
    annotations/instances_test*.json    + test*/  image folder   (optional: held out, see find_test_split)

which is also the layout :func:`autoloss.detection.synthetic.make_synthetic_coco` writes. When there is
only a training annotation file, a validation split is carved out of it with a fixed seed and
written to ``<data_dir>/.autoloss/instances_{train,val}_carved.json`` (the user's files are never
modified); if ``data_dir`` is read-only, the carved files go to ``<work_dir>/data_cache/<key>/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from autoloss.errors import UserError

REQUIRED_KEYS = ("images", "annotations", "categories")
MIN_SIDE = 4  # pixels: mmdet's filter_cfg.min_size of the small bundled detectors (the R50 ones use 32)
BOX_TOLERANCE = 1.0  # pixels a box may reach past the image border (rounding in real annotation files)
# what mmcv's default (OpenCV) image decoding reads, as Pillow names the formats
DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "WEBP", "TIFF", "PPM"}
EXIF_ORIENTATION, TRANSPOSED = 0x0112, (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass
class CocoSplits:
    """Where a dataset's two splits are, once validated.

    ``categories`` holds the category names in category-id order (the ``classes`` of an MMDetection
    dataset); ``category_ids`` the matching ids. When the validation split was carved out of the
    training annotations, both image dirs are the training image dir and ``carved`` is True.
    """

    train_ann: str
    val_ann: str
    train_img_dir: str
    val_img_dir: str
    categories: list
    num_train: int
    num_val: int
    category_ids: list = None
    carved: bool = False
    min_side: int = 0  # the smallest image side (pixels) in the training split; 0 when not checked


def _unique_ids(path, data: dict, key: str, field: str, what: str) -> set:
    """The ids of data[key], each entry a dict with an 'id' and ``field``, no id repeated."""
    ids = set()
    for i, entry in enumerate(data[key]):
        if not isinstance(entry, dict) or "id" not in entry or field not in entry:
            raise UserError(f"{path}: {key}[{i}] needs an 'id' and a '{field}'")
        if entry["id"] in ids:
            raise UserError(f"{path}: {key}[{i}] repeats {what} id {entry['id']!r}")
        ids.add(entry["id"])
    return ids


def load_coco(ann_file) -> dict:
    """Load and check one COCO annotation file: valid JSON, the three keys, consistent references."""
    path = Path(ann_file)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise UserError(f"{path}: not a COCO file (JSON nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise UserError(f"{path}: not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a COCO annotation file must hold a JSON object, found {type(data).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise UserError(f"{path}: not a COCO detection file, missing key(s) {', '.join(repr(k) for k in missing)}")
    for key in REQUIRED_KEYS:
        if not isinstance(data[key], list):
            raise UserError(f"{path}: '{key}' must be a list, found {type(data[key]).__name__}")
    if not data["categories"]:
        raise UserError(f"{path}: 'categories' is empty")

    image_ids = _unique_ids(path, data, "images", "file_name", "image")
    category_ids = _unique_ids(path, data, "categories", "name", "category")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise UserError(f"{path}: annotations[{i}] is not an object")
        if ann.get("image_id") not in image_ids:
            raise UserError(f"{path}: annotations[{i}] (id {ann.get('id')!r}) refers to unknown image id "
                            f"{ann.get('image_id')!r}")
        if ann.get("category_id") not in category_ids:
            raise UserError(f"{path}: annotations[{i}] (id {ann.get('id')!r}) refers to unknown category id "
                            f"{ann.get('category_id')!r}; known ids are {sorted(category_ids, key=str)}")
        bbox = ann.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise UserError(f"{path}: annotations[{i}] (id {_shown(ann.get('id'))}) needs a 'bbox' of 4 numbers "
                            f"[x, y, w, h], found {_shown(bbox)}")
    return data


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _side(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def box_problem(bbox: list, width=None, height=None) -> str | None:
    """What is wrong with a COCO ``[x, y, w, h]`` box in an image of ``width`` x ``height``, or None."""
    if not all(isinstance(v, int) or math.isfinite(v) for v in bbox):
        return f"bbox {_shown(bbox)} has a coordinate that is not a finite number"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {_shown(bbox)} has a width or height of zero or less"
    if width is not None and (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE
                              or y + h > height + BOX_TOLERANCE):
        return f"bbox {_shown(bbox)} reaches outside its {width} x {height} image"
    return None


def check_geometry(data: dict, ann_file, min_side: int = MIN_SIDE) -> int:
    """Check the declared image sizes and every box of a file :func:`load_coco` read.

    Each image needs an integer ``width`` and ``height`` of at least ``min_side``; each box must be
    finite, of positive size and inside its image. Returns the smallest image side; raises one
    :class:`UserError` naming the first problem and counting the images and annotations with one.
    """
    path = Path(ann_file)
    problems, bad_images, sizes = [], 0, {}
    for i, image in enumerate(data["images"]):
        width, height = image.get("width"), image.get("height")
        where = f"image id {_shown(image['id'])} ({_shown(str(image['file_name']))})"
        if not (_side(width) and _side(height)):
            problem = f"{where} needs a positive integer 'width' and 'height', found {_shown(width)} x {_shown(height)}"
        elif min(width, height) < min_side:
            problem = (f"{where} is {width} x {height} pixels; the detectors train on images of at least "
                       f"{min_side} x {min_side}")
        else:
            sizes[image["id"]] = (width, height)
            continue
        bad_images += 1
        problems.append(problem)
    bad_boxes = 0
    for i, ann in enumerate(data["annotations"]):
        size = sizes.get(ann["image_id"])
        problem = box_problem(ann["bbox"], *(size or (None, None)))
        if problem is not None:
            bad_boxes += 1
            problems.append(f"annotation id {_shown(ann.get('id'))} (annotations[{i}]): {problem}")
    if problems:
        raise UserError(f"{path}: {problems[0]} ({_counted(bad_images, len(data['images']), 'image')}, "
                        f"{_counted(bad_boxes, len(data['annotations']), 'annotation')} with a problem)")
    return min((min(size) for size in sizes.values()), default=0)


def _counted(n: int, total: int, what: str) -> str:
    return f"{n} of {total} {what}{'' if total == 1 else 's'}"


def image_problem(file: Path, width: int, height: int) -> str | None:
    """What is wrong with an image file declared ``width`` x ``height``, or None (reads the header only)."""
    if not file.is_file():
        return "is missing" if not file.exists() else "is not a regular file"
    try:
        with Image.open(file) as img:
            kind, (w, h) = img.format, img.size
            # OpenCV turns an image by its EXIF orientation (JPEG at least): either size may be declared
            sizes = {(w, h), (h, w)} if img.getexif().get(EXIF_ORIENTATION) in TRANSPOSED else {(w, h)}
    except UnidentifiedImageError:
        return "cannot be decoded as an image"
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow raises all three for broken headers
        return f"cannot be decoded as an image ({' '.join(str(exc).split())[:80]})"
    except Image.DecompressionBombError:
        return "is too large to decode (a decompression bomb, by Pillow's limit)"
    if kind not in DECODABLE_FORMATS:
        return f"is a {kind} image; the detectors read {', '.join(sorted(DECODABLE_FORMATS))}"
    if (width, height) not in sizes:
        return f"is {w} x {h} pixels, but the annotation file declares {width} x {height}"
    return None


def require_min_side(splits: CocoSplits, min_size: int, config) -> None:
    """A :class:`UserError` when training images are smaller than a detector config trains on.

    MMDetection silently leaves out training images whose shorter side is under the config's
    ``train_dataloader.dataset.filter_cfg.min_size``; this says so before any training instead.
    """
    if splits.min_side and min_size and splits.min_side < min_size:
        raise UserError(f"{splits.train_ann}: the smallest training image has a side of {splits.min_side} pixels; "
                        f"{Path(str(config)).name} trains only on images of at least {min_size} x {min_size} "
                        f"(train_dataloader.dataset.filter_cfg.min_size)")


def check_image_files(data: dict, ann_file, img_dir) -> None:
    """Check every image of a checked file (see :func:`check_geometry`): present, decodable, of the declared size."""
    img_dir = Path(img_dir)
    if not img_dir.is_dir():
        raise UserError(f"{img_dir}: image folder for {Path(ann_file).name} not found")
    problems = []
    for image in data["images"]:
        name = str(image["file_name"])
        problem = image_problem(img_dir / name, image["width"], image["height"])
        if problem is not None:
            problems.append(f"{img_dir / name} (image id {_shown(image['id'])}) {problem}")
    if problems:
        raise UserError(f"{Path(ann_file)}: {problems[0]} ({_counted(len(problems), len(data['images']), 'image')} "
                        f"of {img_dir} with a problem)")


def find_coco_splits(data_dir, val_fraction: float = 0.2, seed: int = 0, work_dir=None,
                     check_files: bool = True, min_side: int = MIN_SIDE) -> CocoSplits:
    """Find, validate and (if needed) split a COCO dataset directory; see the module docstring.

    ``check_files=False`` skips reading the image files (the annotations are checked all the same).
    """
    root = Path(data_dir)
    if not root.exists():
        raise UserError(f"{root}: dataset directory not found")
    if not root.is_dir():
        raise UserError(f"{root}: dataset path is not a directory")
    ann_dir = root / "annotations"
    train_ann = _find_annotation(ann_dir, "train")
    val_ann = _find_annotation(ann_dir, "val")
    if train_ann is None:
        looked = f"{ann_dir}/instances_train.json, instances_train2017.json, instances_train*.json"
        if val_ann is not None:
            raise UserError(f"{root}: found {val_ann.name} but no training annotation file (looked for {looked})")
        raise UserError(f"{root}: no COCO annotation file found (looked for {looked} "
                        f"and {ann_dir}/instances_val*.json)")

    train = load_coco(train_ann)
    train_img_dir = _find_image_dir(root, "train", train_ann)
    if not train["images"]:
        raise UserError(f"{train_ann}: 'images' is empty")
    smallest = check_geometry(train, train_ann, min_side)
    if check_files:
        check_image_files(train, train_ann, train_img_dir)
    names, ids = _category_names(train)

    if val_ann is not None:
        val = load_coco(val_ann)
        val_img_dir = _find_image_dir(root, "val", val_ann)
        check_geometry(val, val_ann, min_side)
        if check_files:
            check_image_files(val, val_ann, val_img_dir)
        if _category_names(val) != (names, ids):
            raise UserError(f"{val_ann}: categories differ from those of {train_ann.name}; both splits need "
                            f"the same category ids and names")
        return CocoSplits(str(train_ann), str(val_ann), str(train_img_dir), str(val_img_dir), names,
                          len(train["images"]), len(val["images"]), ids, carved=False, min_side=smallest)

    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    train_part, val_part = carve_split(train, val_fraction, seed)
    out_dir = _carve_dir(root, train_ann, val_fraction, seed, work_dir)
    info = {"autoloss_carved_from": str(train_ann), "val_fraction": val_fraction, "seed": seed}
    carved_train = out_dir / "instances_train_carved.json"
    carved_val = out_dir / "instances_val_carved.json"
    _write_json(carved_train, {**train_part, "info": {**info, "split": "train"}})
    _write_json(carved_val, {**val_part, "info": {**info, "split": "val"}})
    return CocoSplits(str(carved_train), str(carved_val), str(train_img_dir), str(train_img_dir), names,
                      len(train_part["images"]), len(val_part["images"]), ids, carved=True, min_side=smallest)


def find_test_split(data_dir, splits: CocoSplits, check_files: bool = True, min_side: int = MIN_SIDE
                    ) -> tuple[str, str, int]:
    """The held-out test split of ``data_dir`` (``annotations/instances_test*.json`` and its image folder),
    checked like the others and against ``splits``' categories: ``(annotation file, image dir, images)``.
    No search stage reads it; ``autoloss evaluate --split test`` scores on it."""
    root = Path(data_dir)
    test_ann = _find_annotation(root / "annotations", "test")
    if test_ann is None:
        raise UserError(f"{root}: no test split (looked for {root / 'annotations'}/instances_test*.json); "
                        f"score on the validation split instead (--split val)")
    test = load_coco(test_ann)
    if not test["images"]:
        raise UserError(f"{test_ann}: 'images' is empty")
    img_dir = _find_image_dir(root, "test", test_ann)
    check_geometry(test, test_ann, min_side)
    if check_files:
        check_image_files(test, test_ann, img_dir)
    names, ids = _category_names(test)
    if names != list(splits.categories) or (splits.category_ids is not None and ids != list(splits.category_ids)):
        raise UserError(f"{test_ann}: categories differ from those of the training split; the test split needs "
                        f"the same category ids and names")
    return str(test_ann), str(img_dir), len(test["images"])


def carve_split(data: dict, val_fraction: float, seed: int):
    """Split a COCO dict by image into (train, val) dicts; deterministic for a seed."""
    image_ids = sorted(image["id"] for image in data["images"])
    if len(image_ids) < 2:
        raise UserError("cannot carve a validation split out of fewer than 2 training images")
    random.Random(seed).shuffle(image_ids)
    n_val = min(len(image_ids) - 1, max(1, round(val_fraction * len(image_ids))))
    val_ids = set(image_ids[:n_val])
    parts = []
    for keep in (lambda i: i not in val_ids, lambda i: i in val_ids):
        parts.append({
            "images": [im for im in data["images"] if keep(im["id"])],
            "annotations": [a for a in data["annotations"] if keep(a["image_id"])],
            "categories": data["categories"],
            "licenses": data.get("licenses", []),
        })
    return parts[0], parts[1]


def sample_verify_set(ann_file, out_file, seed: int = 0) -> dict:
    """Write D_verify of CSE-Autoloss: one training image per category, with all its annotations.

    For each category in id order, a random image (drawn with ``seed``) containing that category is
    chosen, preferring images not already chosen. So the set holds exactly one image per category
    whenever enough distinct images exist; when a category can only be covered by an image already
    chosen for an earlier category, that image is shared and counted once (fewer images than
    categories). Categories with no annotation at all cannot be covered and are listed under
    ``"uncovered"``. The output keeps the full ``categories`` list of the input.

    Returns ``{"images": number of images, "categories": number of categories covered,
    "uncovered": [ids of categories with no image]}``.
    """
    data = load_coco(ann_file)
    images_of = {}
    for ann in data["annotations"]:
        images_of.setdefault(ann["category_id"], set()).add(ann["image_id"])
    rng = random.Random(seed)
    chosen, uncovered, covered = [], [], 0
    for cat in sorted(data["categories"], key=lambda c: c["id"]):
        candidates = sorted(images_of.get(cat["id"], ()), key=lambda i: (str(type(i)), i))
        if not candidates:
            uncovered.append(cat["id"])
            continue
        fresh = [i for i in candidates if i not in chosen]
        pick = rng.choice(fresh or candidates)
        if pick not in chosen:
            chosen.append(pick)
        covered += 1
    keep = set(chosen)
    by_id = {image["id"]: image for image in data["images"]}
    out = {
        "info": {"description": "D_verify: one image per category", "source": str(ann_file), "seed": seed},
        "licenses": data.get("licenses", []),
        "images": [by_id[i] for i in chosen],
        "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
        "categories": data["categories"],
    }
    _write_json(Path(out_file), out)
    return {"images": len(chosen), "categories": covered, "uncovered": uncovered}


def _find_annotation(ann_dir: Path, split: str):
    if not ann_dir.is_dir():
        return None
    for exact in (f"instances_{split}.json", f"instances_{split}2017.json"):
        if (ann_dir / exact).is_file():
            return ann_dir / exact
    matches = sorted(p for p in ann_dir.glob(f"instances_{split}*.json")
                     if p.is_file() and "_carved" not in p.name)
    return matches[0] if matches else None


def _find_image_dir(root: Path, split: str, ann_file: Path) -> Path:
    suffix = ann_file.stem[len(f"instances_{split}"):]  # "2017" for instances_train2017.json
    candidates = [root / f"{split}{suffix}", root / split, root / "images" / f"{split}{suffix}",
                  root / "images" / split]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    others = sorted(p for p in root.glob(f"{split}*") if p.is_dir())
    if others:
        return others[0]
    raise UserError(f"{root}: image folder for {ann_file.name} not found (looked for "
                    f"{', '.join(str(c.relative_to(root)) + '/' for c in candidates[:2])} and {split}*/)")


def _category_names(data: dict):
    cats = sorted(data["categories"], key=lambda c: c["id"])
    return [str(c["name"]) for c in cats], [c["id"] for c in cats]


def _is_writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_probe_{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


def _carve_dir(root: Path, train_ann: Path, val_fraction: float, seed: int, work_dir) -> Path:
    local = root / ".autoloss"
    if _is_writable(local):
        return local
    if work_dir is None:
        raise UserError(f"{root}: read-only, and no work directory was given for the carved validation split")
    key = hashlib.sha1(f"{train_ann.resolve()}|{val_fraction}|{seed}".encode()).hexdigest()[:12]
    cache = Path(work_dir) / "data_cache" / key
    if not _is_writable(cache):
        raise UserError(f"{cache}: cannot write the carved validation split here")
    return cache


def _write_json(path: Path, data: dict) -> None:
    from autoloss.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
