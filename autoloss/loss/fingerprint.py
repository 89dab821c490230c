"""The functional fingerprint of a loss (temporary: values and gradients on the probe batch)."""

from __future__ import annotations

from autoloss.loss.expression import Node
from autoloss.loss.probe import fingerprint_of, probe
from autoloss.loss.space import SearchSpace

IOU_FEEDS = ("one", "confidence", "iou")


def training_fingerprint(space: SearchSpace, node: Node, iou: str = "iou") -> str | None:
    result = probe(space, node)
    return None if isinstance(result, Exception) else fingerprint_of(result)
