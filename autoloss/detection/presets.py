"""Named settings of the synthetic detection data (:func:`autoloss.detection.synthetic.make_synthetic_coco`).

``shapes``: the generator's defaults (64 train / 16 val images, 1-4 shapes of 12-48 px on varied
backgrounds). ``clutter``: smaller and more objects among unannotated distractor shapes, and more
images; there the classification loss on the negatives matters, and with a pretrained backbone
``fcos_small``'s proxy puts FL several seed sds above BCE (docs/benchmarks.md, proxy reliability). It
is the demo's data. Kept apart from the generator so the command line reads it without numpy.
"""

PRESETS = {
    "shapes": {},
    "clutter": {"num_train": 256, "num_val": 64, "max_objects": 8, "distractors": 4, "sizes": (8, 32)},
}
