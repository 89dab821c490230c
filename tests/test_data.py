"""Datasets: the synthetic COCO generator, reading and validating COCO dirs, and D_verify sampling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from autoloss.detection import coco as coco_mod
from autoloss.detection.coco import CocoSplits, find_coco_splits, load_coco, sample_verify_set
from autoloss.detection.synthetic import make_synthetic_coco
from autoloss.errors import UserError

SMALL = dict(num_train=24, num_val=6)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, make_synthetic_coco(out)


def test_generator_is_deterministic(tmp_path):
    a = make_synthetic_coco(tmp_path / "a", **SMALL, seed=3)
    b = make_synthetic_coco(tmp_path / "b", **SMALL, seed=3)
    for key in ("train_ann", "val_ann"):
        assert Path(a[key]).read_bytes() == Path(b[key]).read_bytes()
    for split in ("train", "val"):
        for name in ("000000.png", "000005.png"):
            pa = np.asarray(Image.open(tmp_path / "a" / split / name))
            pb = np.asarray(Image.open(tmp_path / "b" / split / name))
            assert np.array_equal(pa, pb)
    c = make_synthetic_coco(tmp_path / "c", **SMALL, seed=4)
    assert Path(c["train_ann"]).read_bytes() != Path(a["train_ann"]).read_bytes()


def test_generator_writes_valid_coco(synth):
    out, summary = synth
    assert summary["num_train"] == 64 and summary["num_val"] == 16
    for split, n in (("train", 64), ("val", 16)):
        coco = COCO(summary[f"{split}_ann"])
        assert len(coco.getImgIds()) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["square", "circle", "triangle", "cross"]
        for image in coco.loadImgs(coco.getImgIds()):
            path = out / split / image["file_name"]
            with Image.open(path) as im:
                assert im.size == (image["width"], image["height"]) == (128, 128)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
            assert 1 <= len(anns) <= 4
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
                assert 12 <= max(w, h) <= 48 and ann["iscrowd"] == 0 and 0 < ann["area"] <= w * h
    train = json.loads(Path(summary["train_ann"]).read_text())
    assert {a["category_id"] for a in train["annotations"]} == {1, 2, 3, 4}


def test_bboxes_are_tight(synth):
    """The pixels just outside a box on a solid background match the background, inside they don't."""
    out, summary = synth
    train = json.loads(Path(summary["train_ann"]).read_text())
    ann = next(a for a in train["annotations"] if a["category_id"] == 1)  # a square fills its box
    image = next(i for i in train["images"] if i["id"] == ann["image_id"])
    pixels = np.asarray(Image.open(out / "train" / image["file_name"])).astype(int)
    x, y, w, h = ann["bbox"]
    inside = pixels[y:y + h, x:x + w].reshape(-1, 3)
    assert (inside == inside[0]).all()  # one flat colour: the box holds only the square


def test_generator_is_idempotent(tmp_path):
    first = make_synthetic_coco(tmp_path, **SMALL)
    assert first["regenerated"]
    stamp = Path(first["train_ann"]).stat().st_mtime_ns
    again = make_synthetic_coco(tmp_path, **SMALL)
    assert not again["regenerated"]
    assert Path(first["train_ann"]).stat().st_mtime_ns == stamp
    assert again["num_train_annotations"] == first["num_train_annotations"]
    other = make_synthetic_coco(tmp_path, **SMALL, seed=9)  # different parameters: rewritten
    assert other["regenerated"]
    assert len(list((tmp_path / "train").glob("*.png"))) == SMALL["num_train"]


def test_generator_is_fast(tmp_path):
    import time

    start = time.perf_counter()
    make_synthetic_coco(tmp_path)
    assert time.perf_counter() - start < 5


def test_find_splits_on_synthetic_layout(synth):
    out, _ = synth
    splits = find_coco_splits(out)
    assert isinstance(splits, CocoSplits)
    assert splits.categories == ["square", "circle", "triangle", "cross"]
    assert (splits.num_train, splits.num_val, splits.carved) == (64, 16, False)
    assert Path(splits.train_img_dir) == out / "train" and Path(splits.val_img_dir) == out / "val"


def test_find_splits_coco2017_names(tmp_path, synth):
    out, _ = synth
    (tmp_path / "annotations").mkdir()
    for split in ("train", "val"):
        shutil.copy(out / "annotations" / f"instances_{split}.json",
                    tmp_path / "annotations" / f"instances_{split}2017.json")
        shutil.copytree(out / split, tmp_path / f"{split}2017")
    splits = find_coco_splits(tmp_path)
    assert Path(splits.train_img_dir) == tmp_path / "train2017"
    assert Path(splits.val_ann).name == "instances_val2017.json"


def _train_only(tmp_path, synth) -> Path:
    out, _ = synth
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    shutil.copy(out / "annotations" / "instances_train.json", data / "annotations")
    shutil.copytree(out / "train", data / "train")
    return data


def test_carved_val_split(tmp_path, synth):
    data = _train_only(tmp_path, synth)
    original = (data / "annotations" / "instances_train.json").read_bytes()
    splits = find_coco_splits(data, val_fraction=0.25, seed=0)
    assert splits.carved and (splits.num_train, splits.num_val) == (48, 16)
    assert Path(splits.val_ann) == data / ".autoloss" / "instances_val_carved.json"
    assert splits.val_img_dir == splits.train_img_dir
    train, val = COCO(splits.train_ann), COCO(splits.val_ann)
    train_ids, val_ids = set(train.getImgIds()), set(val.getImgIds())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(1, 65))
    assert {a["image_id"] for a in val.dataset["annotations"]} <= val_ids
    assert (data / "annotations" / "instances_train.json").read_bytes() == original
    first_val = Path(splits.val_ann).read_bytes()
    assert Path(find_coco_splits(data, val_fraction=0.25, seed=0).val_ann).read_bytes() == first_val
    find_coco_splits(data, val_fraction=0.25, seed=1)
    assert Path(splits.val_ann).read_bytes() != first_val


def test_carved_split_goes_to_work_dir_when_data_is_read_only(tmp_path, synth, monkeypatch):
    data = _train_only(tmp_path, synth)
    real = coco_mod._is_writable
    monkeypatch.setattr(coco_mod, "_is_writable", lambda d: False if data in Path(d).parents else real(d))
    with pytest.raises(UserError, match="read-only"):
        find_coco_splits(data)
    splits = find_coco_splits(data, work_dir=tmp_path / "work")
    assert Path(splits.val_ann).is_relative_to(tmp_path / "work")
    assert not (data / ".autoloss").exists()


def _broken(tmp_path, synth, mutate=None, text=None) -> Path:
    out, _ = synth
    data = tmp_path / "broken"
    shutil.copytree(out, data)
    ann = data / "annotations" / "instances_train.json"
    if text is not None:
        ann.write_text(text)
    elif mutate is not None:
        coco = json.loads(ann.read_text())
        mutate(coco)
        ann.write_text(json.dumps(coco))
    return data


def test_missing_directory(tmp_path):
    with pytest.raises(UserError, match="dataset directory not found") as err:
        find_coco_splits(tmp_path / "nope")
    assert "nope" in str(err.value)


def test_no_annotation_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    with pytest.raises(UserError, match="no COCO annotation file found") as err:
        find_coco_splits(tmp_path)
    assert "instances_train.json" in str(err.value) and "instances_val" in str(err.value)


def test_corrupt_json(tmp_path, synth):
    data = _broken(tmp_path, synth, text='{"images": [')
    with pytest.raises(UserError, match="not valid JSON") as err:
        find_coco_splits(data)
    assert "instances_train.json" in str(err.value)


def test_missing_keys(tmp_path, synth):
    data = _broken(tmp_path, synth, mutate=lambda c: c.pop("categories"))
    with pytest.raises(UserError, match="missing key.*'categories'") as err:
        find_coco_splits(data)
    assert "instances_train.json" in str(err.value)


def test_unknown_category(tmp_path, synth):
    data = _broken(tmp_path, synth, mutate=lambda c: c["annotations"][3].update(category_id=99))
    with pytest.raises(UserError, match="unknown category id 99") as err:
        find_coco_splits(data)
    assert "instances_train.json" in str(err.value)


def test_unknown_image(tmp_path, synth):
    data = _broken(tmp_path, synth, mutate=lambda c: c["annotations"][0].update(image_id=12345))
    with pytest.raises(UserError, match="unknown image id 12345"):
        find_coco_splits(data)


def test_missing_image_folder(tmp_path, synth):
    data = _broken(tmp_path, synth)
    shutil.rmtree(data / "val")
    with pytest.raises(UserError, match="image folder for instances_val.json not found"):
        find_coco_splits(data)


def test_missing_image_files(tmp_path, synth):
    data = _broken(tmp_path, synth)
    for png in sorted((data / "train").glob("*.png"))[::2]:
        png.unlink()
    with pytest.raises(UserError, match=r"train/000000.png \(image id 1\) is missing \(32 of 64 images") as err:
        find_coco_splits(data)
    assert "instances_train.json" in str(err.value)
    assert find_coco_splits(data, check_files=False).num_train == 64


def test_verify_set_one_image_per_category(tmp_path, synth):
    _, summary = synth
    result = sample_verify_set(summary["train_ann"], tmp_path / "verify.json", seed=0)
    assert result == {"images": 4, "categories": 4, "uncovered": []}
    verify = COCO(str(tmp_path / "verify.json"))
    assert len(verify.getImgIds()) == 4
    assert verify.dataset["categories"] == load_coco(summary["train_ann"])["categories"]
    for cat in verify.getCatIds():
        assert verify.getImgIds(catIds=[cat])
    train = load_coco(summary["train_ann"])
    n_train_anns = sum(a["image_id"] in set(verify.getImgIds()) for a in train["annotations"])
    assert len(verify.dataset["annotations"]) == n_train_anns  # every annotation of a chosen image


def test_verify_set_is_seeded(tmp_path, synth):
    _, summary = synth
    sample_verify_set(summary["train_ann"], tmp_path / "a.json", seed=0)
    sample_verify_set(summary["train_ann"], tmp_path / "b.json", seed=0)
    sample_verify_set(summary["train_ann"], tmp_path / "c.json", seed=1)
    a, b, c = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "abc")
    assert a == b
    assert [i["id"] for i in a["images"]] != [i["id"] for i in c["images"]]


def test_verify_set_shares_an_image_when_it_must(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "1.png"}, {"id": 2, "file_name": "2.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [9, 9, 5, 5]},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 5]},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"},
                       {"id": 4, "name": "d"}],
    }
    (tmp_path / "in.json").write_text(json.dumps(coco))
    result = sample_verify_set(tmp_path / "in.json", tmp_path / "out.json")
    assert result == {"images": 2, "categories": 3, "uncovered": [4]}


# ------------------------------------------------------------------------------ broken datasets


def _box(index, value):
    def mutate(coco):
        coco["annotations"][3]["bbox"][index] = value
    return mutate


def _image(**fields):
    def mutate(coco):
        for key, value in fields.items():
            if value is None:
                coco["images"][2].pop(key)
            else:
                coco["images"][2][key] = value
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_box(2, -5), r"annotation id 4 \(annotations\[3\]\): bbox \[.*\] has a width or height of zero or less"),
    (_box(2, 0), "has a width or height of zero or less"),
    (_box(3, 0.0), "has a width or height of zero or less"),
    (_box(0, float("nan")), "has a coordinate that is not a finite number"),
    (_box(1, float("inf")), "has a coordinate that is not a finite number"),
    (_box(3, float("-inf")), "has a coordinate that is not a finite number"),
    (_box(0, 500), "reaches outside its 128 x 128 image"),
    (_box(1, -30), "reaches outside its 128 x 128 image"),
    (_box(2, 10 ** 4000), r"bbox \[.{40,70}\.\.\. reaches outside its 128 x 128 image"),
    (_image(width=1, height=1), r"image id 3 \('000002.png'\) is 1 x 1 pixels; the detectors train on images "
                                r"of at least 4 x 4"),
    (_image(width=None), r"image id 3 \('000002.png'\) needs a positive integer 'width' and 'height'"),
    (_image(height="128"), "needs a positive integer 'width' and 'height', found 128 x '128'"),
    (_image(width=0), "needs a positive integer 'width' and 'height'"),
], ids=["negative-width", "zero-width", "zero-height", "nan", "inf", "minus-inf", "outside-right", "outside-top",
        "4000-digit-width", "1x1-image", "no-width", "height-as-text", "zero-width-image"])
def test_broken_annotation_is_one_line_before_training(tmp_path, synth, mutate, message):
    """Each broken box or image entry is refused by find_coco_splits, naming the file, the id and the problem."""
    data = _broken(tmp_path, synth, mutate=mutate)
    with pytest.raises(UserError, match=message) as err:
        find_coco_splits(data, check_files=False)
    text = str(err.value)
    assert "instances_train.json" in text and "\n" not in text
    assert "with a problem)" in text  # the count a lenient reading would drop


def test_json_nan_literals_are_refused(tmp_path, synth):
    """NaN and Infinity literals (which Python's json reads) are caught as non-finite coordinates."""
    data = _broken(tmp_path, synth)
    ann = data / "annotations" / "instances_val.json"
    coco = json.loads(ann.read_text())
    coco["annotations"][0]["bbox"] = "BOX"
    ann.write_text(json.dumps(coco).replace('"BOX"', "[NaN, 1, Infinity, 2]"))
    with pytest.raises(UserError, match=r"instances_val.json: annotation id 1 .*bbox \[nan, 1, inf, 2\] has a "
                                        "coordinate that is not a finite number"):
        find_coco_splits(data, check_files=False)


def test_counts_every_bad_annotation(tmp_path, synth):
    """The message counts all images and annotations with a problem, not only the first."""
    def mutate(coco):
        for ann in coco["annotations"][:5]:
            ann["bbox"][2] = 0
        coco["images"][0].pop("height")
    data = _broken(tmp_path, synth, mutate=mutate)
    coco = json.loads((data / "annotations" / "instances_train.json").read_text())
    with pytest.raises(UserError) as err:
        find_coco_splits(data, check_files=False)
    assert f"(1 of 64 images, 5 of {len(coco['annotations'])} annotations with a problem)" in str(err.value)


def _replace_image(data: Path, name: str, write) -> None:
    path = data / "train" / name
    write(path)


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_bytes(b"this is not a PNG file"), r"000005.png \(image id 6\) cannot be decoded as an image"),
    (lambda p: p.write_bytes(p.read_bytes()[:20]), r"000005.png \(image id 6\) cannot be decoded"),
    (lambda p: p.write_bytes(b""), "cannot be decoded as an image"),
    (lambda p: Image.new("RGB", (96, 128)).save(p, format="PNG"),
     "is 96 x 128 pixels, but the annotation file declares 128 x 128"),
    (lambda p: Image.new("RGB", (1, 1)).save(p, format="PNG"), "is 1 x 1 pixels, but the annotation file declares"),
    (lambda p: Image.new("RGB", (128, 128)).save(p, format="GIF"), "is a GIF image; the detectors read"),
    (lambda p: (p.unlink(), p.mkdir()), "is not a regular file"),
], ids=["garbage", "truncated-header", "empty", "wrong-size", "1x1-file", "gif", "directory"])
def test_broken_image_file_is_one_line_before_training(tmp_path, synth, write, message):
    """Every image file is opened (header only): undecodable, of another size or format, or not a file, it is refused."""
    data = _broken(tmp_path, synth)
    _replace_image(data, "000005.png", write)
    with pytest.raises(UserError, match=message) as err:
        find_coco_splits(data)
    assert "instances_train.json" in str(err.value) and "1 of 64 images" in str(err.value)
    assert find_coco_splits(data, check_files=False).num_train == 64  # the annotations themselves are fine


def test_exif_rotated_jpeg_may_declare_either_size(tmp_path):
    """A JPEG whose EXIF orientation turns it by 90 degrees matches its stored or its turned size."""
    from autoloss.detection.coco import image_problem

    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30)).save(path, format="JPEG", exif=exif)
    assert image_problem(path, 40, 30) is None
    assert image_problem(path, 30, 40) is None
    assert "declares 40 x 40" in image_problem(path, 40, 40)


def test_min_side_of_the_training_split_is_kept(synth):
    """CocoSplits.min_side is the smallest training image side; require_min_side compares it with a config's."""
    from autoloss.detection.coco import require_min_side

    out, _ = synth
    splits = find_coco_splits(out)
    assert splits.min_side == 128
    require_min_side(splits, 32, "faster_rcnn_r50_fpn.py")
    with pytest.raises(UserError, match="smallest training image has a side of 128 pixels; "
                                        "big.py trains only on images of at least 200 x 200"):
        require_min_side(splits, 200, "/configs/big.py")


def test_min_side_is_a_parameter(tmp_path, synth):
    """find_coco_splits(min_side=...) refuses images under another size."""
    out, _ = synth
    with pytest.raises(UserError, match="is 128 x 128 pixels; the detectors train on images of at least 200 x 200"):
        find_coco_splits(out, min_side=200, check_files=False)


@pytest.mark.parametrize("text, message", [
    ('{"images": [' + "[" * 100_000 + "]" * 100_000 + "]}", "nested too deeply"),
    ('{"images": [' + "9" * 5000 + "]}", "not valid JSON"),
], ids=["deep-json", "huge-integer"])
def test_hostile_json_is_one_line(tmp_path, synth, text, message):
    """Deep nesting and integers past Python's digit limit in an annotation file are one line, not a crash."""
    data = _broken(tmp_path, synth, text=text)
    with pytest.raises(UserError, match=message):
        find_coco_splits(data)


# ------------------------------------------------------------------ a held-out test split, harder data


def test_a_test_split_leaves_train_and_val_as_they_were(tmp_path):
    plain = make_synthetic_coco(tmp_path / "plain", num_train=6, num_val=3)
    held = make_synthetic_coco(tmp_path / "held", num_train=6, num_val=3, num_test=4)
    for split in ("train", "val"):
        assert Path(held[f"{split}_ann"]).read_bytes() == Path(plain[f"{split}_ann"]).read_bytes()
    assert "test_ann" not in plain and held["num_test"] == 4
    test = load_coco(held["test_ann"])
    assert len(test["images"]) == 4 and len(list(Path(held["test_img_dir"]).glob("*.png"))) == 4
    train_pixels = {np.asarray(Image.open(p)).tobytes() for p in Path(held["train_img_dir"]).glob("*.png")}
    assert not train_pixels & {np.asarray(Image.open(p)).tobytes() for p in Path(held["test_img_dir"]).glob("*.png")}
    # the manifest of a dataset written before these options is still this generator's: no new keys by default
    assert set(json.loads((tmp_path / "plain" / "autoloss_synthetic.json").read_text())) >= {"num_train", "seed"}
    assert "num_test" not in json.loads((tmp_path / "plain" / "autoloss_synthetic.json").read_text())
    splits = find_coco_splits(tmp_path / "held")
    ann, img_dir, n = coco_mod.find_test_split(tmp_path / "held", splits)
    assert (ann, n) == (held["test_ann"], 4) and Path(img_dir) == Path(held["test_img_dir"])


def test_distractors_are_drawn_but_not_annotated_and_sizes_bound_the_objects(tmp_path):
    kwargs = dict(num_train=8, num_val=2, max_objects=3, sizes=(8, 20))
    plain = make_synthetic_coco(tmp_path / "plain", **kwargs)
    cluttered = make_synthetic_coco(tmp_path / "clutter", distractors=4, **kwargs)
    for made in (plain, cluttered):
        data = load_coco(made["train_ann"])
        assert all(max(a["bbox"][2], a["bbox"][3]) <= 20 for a in data["annotations"])
        assert {c["name"] for c in data["categories"]} == {"square", "circle", "triangle", "cross"}
    # the same objects per image at most, but more drawn shapes: pixels that differ from the background
    # outside every annotated box (a distractor's)
    def unannotated_ink(made) -> int:
        data, count = load_coco(made["train_ann"]), 0
        for image in data["images"]:
            pixels = np.asarray(Image.open(Path(made["train_img_dir"]) / image["file_name"])).astype(int)
            mask = np.ones(pixels.shape[:2], bool)
            for a in data["annotations"]:
                if a["image_id"] == image["id"]:
                    x, y, w, h = a["bbox"]
                    mask[y:y + h, x:x + w] = False
            edges = np.abs(np.diff(pixels, axis=1)).sum(axis=2)[:, :] > 120  # sharp edges: drawn shapes
            count += int((edges & mask[:, 1:]).sum())
        return count
    assert unannotated_ink(cluttered) > 2 * unannotated_ink(plain) + 20


@pytest.mark.parametrize("kwargs, words", [
    ({"num_test": -1}, "num_test >= 0"),
    ({"distractors": -2}, "distractors >= 0"),
    ({"sizes": (2, 10)}, "4 <= smallest <= largest"),
    ({"sizes": (20, 10)}, "4 <= smallest <= largest"),
    ({"sizes": (8, 80)}, "image_size must be at least 160"),
    ({"distractors": 1, "categories": ("square", "circle", "triangle", "cross", "diamond", "ring")},
     "every shape is a category"),
])
def test_bad_generator_options(tmp_path, kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        make_synthetic_coco(tmp_path / "x", **kwargs)


def test_a_missing_or_mismatched_test_split_is_one_clear_error(tmp_path, synth):
    root, _ = synth
    with pytest.raises(UserError, match="no test split.*--split val"):
        coco_mod.find_test_split(root, find_coco_splits(root))
    held = make_synthetic_coco(tmp_path / "held", num_train=4, num_val=2, num_test=2)
    data = json.loads(Path(held["test_ann"]).read_text())
    data["categories"][0]["name"] = "blob"
    Path(held["test_ann"]).write_text(json.dumps(data))
    with pytest.raises(UserError, match="instances_test.json: categories differ"):
        coco_mod.find_test_split(tmp_path / "held", find_coco_splits(tmp_path / "held"))
