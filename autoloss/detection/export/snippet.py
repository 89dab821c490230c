"""The MMDetection config fragment that puts exported losses into a detector.

The fragment imports the exported module (``custom_imports``) and sets ``loss_cls`` / ``loss_bbox``
of the head the search replaced: ``model.roi_head.bbox_head`` for a two-stage detector (Faster
R-CNN), ``model.bbox_head`` for a one-stage one (FCOS). It is meant to come after the detector's
config, as mmengine merges a config over its ``_base_``: each loss dict has ``_delete_=True`` (the
replaced loss's other arguments, such as ``use_sigmoid`` or ``gamma``, would not fit) and keeps the
replaced loss's ``loss_weight``; a classification loss gets the IoU-aware head it was searched with
(defined in the exported module), a two-stage regression loss ``reg_decoded_bbox=True``, a sigmoid
one ``use_sigmoid=True`` (one-stage heads size their output by it), as the search configured them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autoloss.errors import UserError
from autoloss.source_text import literal, mention
from autoloss.detection.export.module import HEADS, ExportedLoss

TWO_STAGE, ONE_STAGE = "two_stage", "one_stage"  # as autoloss.detection.mmdet.detectors names them
KIND_OF_MODE = {"softmax": TWO_STAGE, "sigmoid": ONE_STAGE}
STOCK_HEADS = {"IoUAwareShared2FCBBoxHead": "Shared2FCBBoxHead", "IoUAwareFCOSHead": "FCOSHead"}


@dataclass(frozen=True)
class Placement:
    """Where the losses go: the kind of detector, and what its config says about the searched head."""

    kind: str  # TWO_STAGE or ONE_STAGE
    detector: str | None = None  # the detector's name or config path; None when not known
    config_path: str | None = None
    head_type: str | None = None
    loss_weights: dict = field(default_factory=dict)  # "loss_cls" / "loss_bbox" -> weight replaced

    @property
    def head_path(self) -> str:
        return "model.roi_head.bbox_head" if self.kind == TWO_STAGE else "model.bbox_head"


def detector_placement(detector: str) -> Placement:
    """The placement for a bundled detector name or an MMDetection config path (reads the config)."""
    from mmengine.config import Config  # heavy: mmengine, mmdet (only a known detector needs them)

    from autoloss.detection.mmdet.detectors import detector_config_path, detector_kind, searched_head

    path = detector_config_path(detector)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # noqa: BLE001  (a syntax error, a missing _base_, ...)
        raise UserError(f"{path}: cannot read the detector config ({type(exc).__name__}: {exc})") from None
    kind = detector_kind(cfg)
    head = searched_head(cfg)
    weights = {}
    for key in ("loss_cls", "loss_bbox"):
        loss = head.get(key)
        weights[key] = float(loss.get("loss_weight", 1.0)) if isinstance(loss, dict) else 1.0
    return Placement(kind, str(detector), str(path.resolve()), head.get("type"), weights)


def default_placement(losses: list[ExportedLoss]) -> Placement:
    """Without a detector: two-stage for softmax losses, one-stage for sigmoid ones (and for
    regression beside them), two-stage for regression alone."""
    modes = {loss.space.mode for loss in losses}
    return Placement(ONE_STAGE if "sigmoid" in modes else TWO_STAGE)


def check_fits(losses: list[ExportedLoss], placement: Placement) -> None:
    """A :class:`UserError` when a loss cannot go in that detector's head."""
    where = placement.detector or "the detector"
    for loss in losses:
        kind = KIND_OF_MODE.get(loss.space.mode)
        if kind is not None and kind != placement.kind:
            head = "a two-stage RoI box head" if kind == TWO_STAGE else "a one-stage head"
            raise UserError(f"{loss.class_name} is a {loss.space.mode} classification loss for {head}, "
                            f"but {where} is {placement.kind.replace('_', '-')}")
        if loss.needs_iou_head and placement.head_type is not None:
            wanted = HEADS[loss.space.mode]
            if placement.head_type not in (wanted, STOCK_HEADS[wanted]):
                raise UserError(f"{loss.class_name} was searched in an IoU-aware head: autoloss has "
                                f"{wanted} for {STOCK_HEADS[wanted]}, but the head of {where} is "
                                f"{placement.head_type}")


def config_snippet(module_name: str, chosen: list[ExportedLoss], others: list[ExportedLoss],
                   placement: Placement, standalone: bool = True) -> str:
    """The fragment: ``chosen`` (at most one loss per key) in the head, ``others`` listed as comments.

    ``standalone``: the module is a file of its own (the fragment says how to make it importable),
    not a module of an installed package.
    """
    check_fits(chosen + others, placement)
    head: dict = {}
    if any(loss.needs_iou_head for loss in chosen):
        head["type"] = HEADS[next(loss for loss in chosen if loss.needs_iou_head).space.mode]
    for loss in chosen:
        if loss.loss_key == "loss_bbox" and placement.kind == TWO_STAGE:
            head["reg_decoded_bbox"] = True
    for loss in chosen:
        args = {"_delete_": True, "type": loss.class_name}
        if loss.space.mode == "sigmoid":
            args["use_sigmoid"] = True
        args["loss_weight"] = placement.loss_weights.get(loss.loss_key, 1.0)
        head[loss.loss_key] = args
    model = {"roi_head": {"bbox_head": head}} if placement.kind == TWO_STAGE else {"bbox_head": head}

    target = mention(placement.detector) if placement.detector else f"a {placement.kind.replace('_', '-')} detector"
    lines = [
        f"# MMDetection config fragment for the losses of {module_name} (written by autoloss export):",
        f"# they replace the losses of {placement.head_path} of {target}.",
        "# Use it after your detector's config: below the _base_ line of a config that starts from it,",
        "# or as a config of its own with the _base_ line below uncommented.",
    ]
    if standalone:
        lines.append(f"# {module_name}.py must be importable: run from its folder or add that folder to PYTHONPATH.")
    lines.append(f"# _base_ = [{literal(placement.config_path or 'path/to/your/detector_config.py')}]")
    if not placement.loss_weights:
        lines.append("# loss_weight: keep the weight of the loss each one replaces in your config.")
    lines += [
        "",
        f"custom_imports = dict(imports=[{module_name!r}], allow_failed_imports=False)",
        "",
        "model = " + _render(model, 0),
    ]
    for key in ("loss_cls", "loss_bbox"):
        alternatives = [loss.class_name for loss in others if loss.loss_key == key]
        if alternatives:
            lines += ["", f"# Other {key} losses in {module_name}.py (swap the type to try them):"]
            lines += [f"#   {name}" for name in alternatives]
    return "\n".join(lines) + "\n"


def _render(value: dict, depth: int) -> str:
    """``dict(key=value, ...)``: on one line when it is flat and short, else one key per line."""
    inline = "dict(" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + ")"
    if all(not isinstance(v, dict) for v in value.values()) and len(inline) + 4 * depth + 16 <= 96:
        return inline
    pad = "    " * (depth + 1)
    items = [f"{pad}{k}={_render(v, depth + 1) if isinstance(v, dict) else repr(v)}" for k, v in value.items()]
    return "dict(\n" + ",\n".join(items) + ")"
