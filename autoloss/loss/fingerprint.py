"""The fingerprint of a loss as training sees it: its gradient with respect to the prediction.

Training sees of a loss only its gradient in the prediction (the targets and the IoU are detached
inputs): two losses whose gradients agree on every input the task feeds train identically, whatever
constant or target-only term separates their values. So the fingerprint is a hash of the rounded
gradient, per sample, with respect to the logits X (classification) or the predicted box through
I, U and E (regression), on probe inputs drawn the way the task feeds them:

- ``iou="one"``: W = 1 for every sample (a perfectly localised positive: noisy-digits by default);
  in sigmoid mode W = 1 at the ground-truth class, 0 elsewhere;
- ``iou="confidence"``: W = the detached probability of the label (noisy-digits ``--iou confidence``);
- ``iou="iou"``: W an IoU in [0, 1] for positives (1 for softmax negatives, 0 off the ground-truth
  class in sigmoid mode), as a detector feeds it.

CEI = -W y log p and CE = -y log p therefore share a fingerprint with ``iou="one"`` (W = 1) and not
with ``iou="iou"``; CEI and CEI - W share it always.
"""

from __future__ import annotations

import hashlib

import torch

from autoloss.loss.compile import compile_loss
from autoloss.loss.expression import Node
from autoloss.loss.probe import rounded_bytes
from autoloss.loss.samples import box_areas, probe_batch
from autoloss.loss.space import SearchSpace

IOU_FEEDS = ("one", "confidence", "iou")
_SEED = 1  # the probe draw of the fingerprint (validity uses seed 0 with its edge values)


def _regression_boxes(generator: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    n = 40
    centres = torch.rand(n, 2, generator=generator, dtype=dtype) * 200
    sizes = torch.exp(torch.rand(n, 2, generator=generator, dtype=dtype) * 5) + 1  # 2 .. 150 px
    target = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    pred = target + torch.randn(n, 4, generator=generator, dtype=dtype) * sizes.repeat(1, 2) * 0.3
    pred = torch.cat([torch.minimum(pred[:, :2], pred[:, 2:] - 0.5), pred[:, 2:]], dim=1)
    pred[1] = target[1] + 300.0  # disjoint
    return pred, target


def _feed_iou(space: SearchSpace, batch: dict, iou: str) -> None:
    """Replace the probe's IoU input by what the task feeds (in place)."""
    iou_input = space.input_for("iou") if any(i.role == "iou" for i in space.inputs) else None
    if iou_input is None or iou == "iou":
        return
    logits = batch[space.input_for("logits").name].detach()
    target = batch[space.input_for("target").name]
    if space.mode == "sigmoid":
        value = target if iou == "one" else target * torch.sigmoid(logits)
    elif iou == "one":
        value = torch.ones(len(logits), 1, dtype=logits.dtype)
    else:
        value = (torch.softmax(logits, dim=1) * target).sum(dim=1, keepdim=True)
    batch[iou_input.name] = value


def prediction_gradient(space: SearchSpace, node: Node, iou: str = "iou",
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The per-sample gradient of the loss with respect to the prediction on the fingerprint probe."""
    if iou not in IOU_FEEDS:
        raise ValueError(f"iou must be one of {IOU_FEEDS}, got {iou!r}")
    loss = compile_loss(node, space.output)
    if space.mode == "regression":
        pred, target = _regression_boxes(torch.Generator().manual_seed(_SEED), dtype)
        pred.requires_grad_(True)
        i, u, e = box_areas(pred, target)
        by_role = {"intersection": i, "union": u, "enclosing": e}
        values = loss(**{inp.name: by_role[inp.role] for inp in space.inputs})
        return torch.autograd.grad(values.sum(), pred, allow_unused=True)[0] if values.requires_grad \
            else torch.zeros_like(pred)
    batch = probe_batch(space, dtype, seed=_SEED)
    _feed_iou(space, batch, iou)
    logits = batch[space.input_for("logits").name].requires_grad_(True)
    values = loss(**batch)
    if not values.requires_grad:
        return torch.zeros_like(logits)
    (grad,) = torch.autograd.grad(values.sum(), logits, allow_unused=True)
    return torch.zeros_like(logits) if grad is None else grad


def training_fingerprint(space: SearchSpace, node: Node, iou: str = "iou") -> str | None:
    """The gradient fingerprint of a tree, or None when it cannot be computed (or is not finite)."""
    try:
        grad = prediction_gradient(space, node, iou)
    except Exception:  # noqa: BLE001  (a candidate that raises has no fingerprint; validity says why)
        return None
    if not torch.isfinite(grad).all():
        return None
    return hashlib.sha1(rounded_bytes(grad.detach().numpy())).hexdigest()[:16]
