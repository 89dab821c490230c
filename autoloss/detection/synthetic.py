"""A small, deterministic synthetic COCO-format detection dataset for demos and tests.

``make_synthetic_coco(out_dir)`` draws coloured shapes (squares, circles, triangles, crosses, ...)
of random sizes and positions on varied backgrounds (solid colours, linear gradients, smooth noise
textures) and writes::

    out_dir/train/000000.png ...            out_dir/val/000000.png ...
    out_dir/annotations/instances_train.json
    out_dir/annotations/instances_val.json
    out_dir/autoloss_synthetic.json          (manifest: the parameters, written last)

and with ``num_test`` a held-out ``out_dir/test/`` + ``annotations/instances_test.json`` that a search
never reads (``autoloss evaluate --split test`` scores on it). ``distractors`` adds unannotated shapes
of the kinds that are not categories (clutter: hard negatives), ``sizes`` sets the objects' side range.

Boxes are COCO ``[x, y, w, h]`` in pixels, tight around the drawn pixels of each shape (computed
from the shape's own mask; shapes in one image do not overlap, so no box is occluded). The same
parameters give byte-identical annotation files and identical pixel data. If ``out_dir`` already
holds the dataset for the same parameters (manifest equal, all files present), nothing is
regenerated. ``out_dir`` must be absent, empty or this generator's (its manifest, written first as
"incomplete" and last in full, says so): a folder of anyone else's files is refused, never written
into (:func:`autoloss.files.generated_folder`, the rule of the tracking demo's data too).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from autoloss.files import generated_folder, write_atomic

GENERATOR_VERSION = 1
MANIFEST = "autoloss_synthetic.json"
SHAPES = ("square", "circle", "triangle", "cross", "diamond", "ring")
MIN_SIZE, MAX_SIZE = 12, 48


def make_synthetic_coco(
    out_dir,
    num_train: int = 64,
    num_val: int = 16,
    image_size: int = 128,
    categories=("square", "circle", "triangle", "cross"),
    max_objects: int = 4,
    seed: int = 0,
    num_test: int = 0,
    distractors: int = 0,
    sizes: tuple[int, int] = (MIN_SIZE, MAX_SIZE),
) -> dict:
    """Write the dataset (or find it already written) and return a summary.

    ``categories`` are shape names from :data:`SHAPES`; category ids are 1..len(categories) in the
    given order. Every image holds 1..``max_objects`` objects; the first objects of the first
    training images cycle through all categories, so every category appears in train whenever
    ``num_train * max_objects >= len(categories)``. Every image also holds 0..``distractors``
    unannotated shapes of the :data:`SHAPES` that are not categories. The test split is drawn after
    train and val, so adding one leaves those two unchanged; so do the defaults of the three options.

    Returns ``{"out_dir", "train_ann", "val_ann", "train_img_dir", "val_img_dir", "categories",
    "num_train", "num_val", "num_test", "num_train_annotations", "num_val_annotations", "regenerated"}``
    (and ``"test_ann", "test_img_dir"`` with a test split).
    """
    categories = tuple(str(c) for c in categories)
    unknown = [c for c in categories if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape categories {unknown}; choose from {list(SHAPES)}")
    if not categories or len(set(categories)) != len(categories):
        raise ValueError("categories must be a non-empty sequence of distinct shape names")
    if num_train < 1 or num_val < 0 or num_test < 0 or max_objects < 1 or distractors < 0:
        raise ValueError("need num_train >= 1, num_val >= 0, num_test >= 0, max_objects >= 1 and distractors >= 0")
    sizes = (int(sizes[0]), int(sizes[1]))
    if not 4 <= sizes[0] <= sizes[1]:
        raise ValueError(f"sizes must be (smallest, largest) with 4 <= smallest <= largest, got {sizes}")
    if image_size < 2 * sizes[1]:
        raise ValueError(f"image_size must be at least {2 * sizes[1]} (twice the largest object)")
    clutter = tuple(shape for shape in SHAPES if shape not in categories)
    if distractors and not clutter:
        raise ValueError("distractors are the shapes that are not categories, and every shape is a category")

    out = Path(out_dir)
    params = {
        "generator": "autoloss.detection.synthetic",
        "version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "categories": list(categories),
        "max_objects": int(max_objects),
        "seed": int(seed),
    }
    # only what differs from the defaults, so the manifests of datasets written before these options match
    params.update({key: value for key, value in (("num_test", int(num_test)), ("distractors", int(distractors)),
                                                 ("sizes", list(sizes))) if value not in (0, [MIN_SIZE, MAX_SIZE])})
    splits = (("train", num_train), ("val", num_val)) + ((("test", num_test),) if num_test else ())
    paths = {
        "train_ann": out / "annotations" / "instances_train.json",
        "val_ann": out / "annotations" / "instances_val.json",
        "train_img_dir": out / "train",
        "val_img_dir": out / "val",
    }
    if num_test:
        paths.update(test_ann=out / "annotations" / "instances_test.json", test_img_dir=out / "test")
    manifest_path = out / MANIFEST
    check_folder(out)
    if _already_there(manifest_path, params, paths, splits):
        counts = {}
        for split, _ in splits:
            with open(paths[f"{split}_ann"]) as f:
                counts[split] = len(json.load(f)["annotations"])
        return _summary(out, paths, params, counts, regenerated=False)

    # an interrupted or different dataset of ours is rewritten below; until it is whole, the manifest
    # says it is ours but incomplete (so an interrupted run finds it ours, and regenerates it)
    _write_text(manifest_path, json.dumps({"generator": params["generator"], "complete": False}) + "\n")
    rng = np.random.default_rng(seed)
    cats = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(categories)]
    counts = {}
    forced = list(range(len(categories)))  # category indices still to place in train
    for split, n in splits:
        img_dir = paths[f"{split}_img_dir"]
        img_dir.mkdir(parents=True, exist_ok=True)
        for stale in img_dir.glob("*.png"):
            stale.unlink()
        images, anns = [], []
        for index in range(n):
            image_id = index + 1
            file_name = f"{index:06d}.png"
            must = []
            if split == "train":
                must, forced = forced[:max_objects], forced[max_objects:]
            pixels, objects = _draw_image(rng, image_size, categories, max_objects, must, sizes,
                                          clutter, distractors)
            Image.fromarray(pixels).save(img_dir / file_name, format="PNG", optimize=False)
            images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
            for cat_index, (x, y, w, h), area in objects:
                anns.append({
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat_index + 1,
                    "bbox": [x, y, w, h],
                    "area": area,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                })
        coco = {
            "info": {"description": f"autoloss synthetic shapes ({split})", "version": str(GENERATOR_VERSION)},
            "licenses": [],
            "images": images,
            "annotations": anns,
            "categories": cats,
        }
        _write_text(paths[f"{split}_ann"], json.dumps(coco, indent=1, sort_keys=True) + "\n")
        counts[split] = len(anns)
    _write_text(manifest_path, json.dumps(params, indent=2, sort_keys=True) + "\n")
    return _summary(out, paths, params, counts, regenerated=True)


def check_folder(out_dir) -> bool:
    """Refuse (UserError) a folder that is neither absent, empty nor this generator's; whether it is ours."""
    return generated_folder(out_dir, MANIFEST, "autoloss.detection.synthetic", "the synthetic COCO dataset")


def _already_there(manifest_path: Path, params: dict, paths: dict, splits) -> bool:
    try:
        with open(manifest_path) as f:
            if json.load(f) != params:
                return False
    except (OSError, ValueError):
        return False
    for split, n in splits:
        if not paths[f"{split}_ann"].is_file() or len(list(paths[f"{split}_img_dir"].glob("*.png"))) != n:
            return False
    return True


def _summary(out: Path, paths: dict, params: dict, counts: dict, regenerated: bool) -> dict:
    return {
        "out_dir": str(out),
        **{key: str(value) for key, value in paths.items()},
        "categories": list(params["categories"]),
        "num_train": params["num_train"],
        "num_val": params["num_val"],
        "num_test": params.get("num_test", 0),
        "num_train_annotations": counts["train"],
        "num_val_annotations": counts["val"],
        "regenerated": regenerated,
    }


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = int(rng.integers(3))
    if kind == 0:  # solid colour
        colour = rng.integers(0, 256, size=3)
        img = np.broadcast_to(colour, (size, size, 3)).astype(np.float64)
    elif kind == 1:  # linear gradient between two colours, random direction
        c0, c1 = rng.integers(0, 256, size=(2, 3)).astype(np.float64)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / (t.max() - t.min())
        img = c0 + t[..., None] * (c1 - c0)
    else:  # smooth noise texture: coarse noise upsampled, plus fine grain
        cells = int(rng.integers(4, 17))
        coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.float64)
        img = img + rng.normal(0, 8, size=img.shape)
    return img


def _contrasting_colour(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    mean = region.reshape(-1, 3).mean(axis=0)
    best, best_dist = None, -1.0
    for _ in range(8):
        colour = rng.integers(0, 256, size=3).astype(np.float64)
        dist = float(np.abs(colour - mean).sum())
        if dist > 200:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best if best_dist > 120 else 255.0 - mean  # fall back to the complement


def _shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of ``shape`` drawn inside a ``size`` x ``size`` cell."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    s = size - 1
    if shape == "square":
        draw.rectangle([0, 0, s, s], fill=255)
    elif shape == "circle":
        draw.ellipse([0, 0, s, s], fill=255)
    elif shape == "triangle":
        apex = float(rng.uniform(0.2, 0.8)) * s
        draw.polygon([(apex, 0), (s, s), (0, s)], fill=255)
    elif shape == "cross":
        t = max(3, size // 3)
        a = (size - t) // 2
        draw.rectangle([a, 0, a + t - 1, s], fill=255)
        draw.rectangle([0, a, s, a + t - 1], fill=255)
    elif shape == "diamond":
        draw.polygon([(s / 2, 0), (s, s / 2), (s / 2, s), (0, s / 2)], fill=255)
    elif shape == "ring":
        t = max(3, size // 4)
        draw.ellipse([0, 0, s, s], fill=255)
        draw.ellipse([t, t, s - t, s - t], fill=0)
    return np.asarray(mask) > 127


def _draw_image(rng, image_size, categories, max_objects, must, sizes, clutter, distractors):
    """One image: its pixels and ``[(category index, box, area)]``; distractor shapes (``clutter``)
    are drawn after the objects and not annotated."""
    img = _background(rng, image_size)
    n = max(int(rng.integers(1, max_objects + 1)), len(must))
    wanted = list(must) + [int(rng.integers(len(categories))) for _ in range(n - len(must))]
    if distractors:
        wanted += [-1 - int(rng.integers(len(clutter))) for _ in range(int(rng.integers(0, distractors + 1)))]
    placed = []  # (x0, y0, x1, y1) cells, kept apart by a 2-pixel margin
    objects = []
    for cat_index in wanted:
        for _attempt in range(50):
            size = int(rng.integers(sizes[0], sizes[1] + 1))
            x0 = int(rng.integers(0, image_size - size + 1))
            y0 = int(rng.integers(0, image_size - size + 1))
            cell = (x0, y0, x0 + size, y0 + size)
            if all(cell[2] + 2 <= p[0] or p[2] + 2 <= cell[0] or cell[3] + 2 <= p[1] or p[3] + 2 <= cell[1]
                   for p in placed):
                break
        else:
            if must and cat_index in must:
                raise RuntimeError("could not place a required object; use a larger image_size")
            continue
        placed.append(cell)
        mask = _shape_mask(categories[cat_index] if cat_index >= 0 else clutter[-1 - cat_index], size, rng)
        colour = _contrasting_colour(rng, img[y0:y0 + size, x0:x0 + size])
        region = img[y0:y0 + size, x0:x0 + size]
        region[mask] = colour
        if cat_index < 0:
            continue  # a distractor: drawn, not annotated
        ys, xs = np.nonzero(mask)
        bx, by = x0 + int(xs.min()), y0 + int(ys.min())
        bw, bh = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
        objects.append((cat_index, (bx, by, bw, bh), int(mask.sum())))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), objects
