"""The object-detection domain: searching and using losses on MMDetection detectors.

* :mod:`~autoloss.detection.coco` reads and checks a COCO-format dataset and samples D_verify;
  :mod:`~autoloss.detection.synthetic` writes a small synthetic one (the ``--demo`` data, in one of the
  named settings of :mod:`~autoloss.detection.presets`); :mod:`~autoloss.detection.pretrain` pretrains
  a backbone on its objects.
* :mod:`~autoloss.detection.task` trains a detector with a candidate loss and scores it (the MOS and
  proxy stages); :mod:`~autoloss.detection.problem` makes that a loss search problem.
* :mod:`~autoloss.detection.mmdet` is the MMDetection glue: detector configs, the searched loss
  modules and the IoU-aware heads; the other modules import it (and mmengine) only where they use it.
* :mod:`~autoloss.detection.compare` trains the found losses against the baselines (``autoloss
  evaluate``); :mod:`~autoloss.detection.export` writes them as standalone MMDetection modules
  (``autoloss export``, and the bundled :mod:`autoloss.zoo`).

Importing this package imports none of them.
"""
