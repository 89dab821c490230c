"""What ``autoloss doctor`` checks: the installed stack, then one live check of each GPU code path per device.

- :func:`stack_rows`: Python, torch (and the CUDA it was built with), the GPUs torch sees, mmcv (its
  version, whether its compiled ops import, and the CUDA they were compiled with), mmengine, mmdet,
  sympy, deap, ray (optional);
- :data:`CHECKS`: on one device, one training step of ``faster_rcnn_small`` (searched loss tree CEI)
  and ``fcos_small`` (FLI), both with the IoU-aware head and the searched GIoU loss, mmcv's RoIAlign
  (forward against its exact value, backward) and NMS, one training step of the proxy tracker with
  a DARTS cell in its neck, and one darts2 step (the second-order architect on the tracker's supernet);
- :func:`run_checks`: every check on every device, each isolated: a check that raises becomes one row
  with a one-line reason and what to do, and the others still run.

Every row is a :class:`Row`; :func:`failed` says whether any failed (the command's exit 1). Nothing
here reads a command line; the checks write only below the scratch folder they are given.
"""

from __future__ import annotations

import contextlib
import io
import math
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

INSTALL_NOTES = "README, 'The two commands'"
REINSTALL = f"run `bash scripts/install.sh` ({INSTALL_NOTES})"
CUDA_MMCV = ("rebuild mmcv 2.1.0 against this torch's CUDA (nvcc of torch.version.cuda via CUDA_HOME, or "
             f"FORCE_CUDA=1), or install a prebuilt wheel with AUTOLOSS_MMCV_WHEEL=... bash scripts/install.sh ({INSTALL_NOTES})")
NO_GPU = "no CUDA device visible to torch"

# The proxy tracker's cell for the tracker step (DARTS-V2's normal cell, as in the tests).
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5])"
)
DETECTOR_LOSSES = {
    "faster_rcnn_small": {"type": "SearchedSoftmaxClsLoss", "expression": "CEI"},
    "fcos_small": {"type": "SearchedSigmoidClsLoss", "expression": "FLI", "use_sigmoid": True},
}
REG_LOSS = {"type": "SearchedIoULoss", "expression": "GIoU"}


@dataclass
class Row:
    """One line of the table: a stack item (``section="stack"``) or a live check on a device."""

    section: str  # "stack" or "check"
    name: str
    status: str  # "ok", "FAIL", "skipped" or "info" (a fact, neither good nor bad)
    detail: str = ""
    device: str = ""
    seconds: float | None = None  # the whole check (building included)
    step_seconds: float | None = None  # the median of the timed steps (steps > 1), else the one step
    steps: int = 0  # steps timed

    def to_dict(self) -> dict:
        return asdict(self)


def one_line(text: str, limit: int = 240) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def advice(exc: BaseException, device: str = "cpu") -> str:
    """What to do about ``exc`` (raised by a check on ``device``), in a few words."""
    text = f"{type(exc).__name__} {exc}"
    lowered = text.lower()
    if "mmcv._ext" in text or "mmcv.ops" in text:
        return f"mmcv's compiled ops are missing (mmcv-lite, or a build that failed): reinstall mmcv 2.1.0, {REINSTALL}"
    if isinstance(exc, ImportError):
        missing = getattr(exc, "name", None) or "the missing package"
        return f"{missing} is not installed or does not import: {REINSTALL}"
    if ("implementation for device cuda" in lowered  # mmcv 2.x's words for an op built without its CUDA kernel
            or "not compiled with gpu support" in lowered or "compiled without cuda" in lowered):
        return f"mmcv's ops were built without CUDA: {CUDA_MMCV}"
    if "inconsistent device" in lowered or "on the same device" in lowered:
        return "tensors on different devices: a bug in autoloss's GPU path; please report it with this table"
    if "out of memory" in lowered:
        return "the device ran out of memory: free it (nvidia-smi shows who holds it) and run again"
    if "no kernel image" in lowered or "cuda driver" in lowered or "cuda error" in lowered:
        return (f"torch's CUDA build does not fit this GPU or its driver: install the torch build for your driver, "
                f"then {REINSTALL}")
    return f"see the install notes ({INSTALL_NOTES}); paste this table into the bug report"


def failure(exc: BaseException, device: str = "cpu") -> str:
    """The one-line reason for a check's exception, and what to do."""
    message = one_line(exc) or "(no message)"
    return one_line(f"{type(exc).__name__}: {message} -> {advice(exc, device)}", 400)


def failed(rows: list[Row]) -> bool:
    return any(row.status == "FAIL" for row in rows)


# ---------------------------------------------------------------------------------------- the stack


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _guarded(name: str, probe: Callable[[], Row]) -> Row:
    try:
        return probe()
    except Exception as exc:  # noqa: BLE001  (a broken package is a row, never a traceback)
        return Row("stack", name, "FAIL", failure(exc))


def _python() -> Row:
    return Row("stack", "python", "info", f"{platform.python_version()} ({sys.executable}, {platform.platform()})")


def _torch() -> Row:
    import torch

    cuda = torch.version.cuda
    built = f"built with CUDA {cuda}" if cuda else "a CPU build (no CUDA)"
    return Row("stack", "torch", "ok", f"{torch.__version__}, {built}; {torch.get_num_threads()} CPU threads")


def cuda_devices() -> tuple[list[str], str]:
    """The CUDA devices torch sees (``cuda:0``, ...) and, where there is none, why."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return [], f"{NO_GPU} (torch does not import: {one_line(exc, 120)})"
    if not torch.version.cuda:
        return [], f"{NO_GPU} (this torch is a CPU build)"
    try:
        with warnings.catch_warnings(record=True) as caught:  # e.g. "CUDA driver version is insufficient"
            warnings.simplefilter("always")
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception as exc:  # noqa: BLE001
        return [], f"{NO_GPU} ({one_line(exc, 120)})"
    if not count:
        said = f"; torch says: {one_line(caught[0].message, 160)}" if caught else ""
        return [], (f"{NO_GPU} (torch built with CUDA {torch.version.cuda}{said}; check nvidia-smi and "
                    "CUDA_VISIBLE_DEVICES)")
    return [f"cuda:{index}" for index in range(count)], ""


def _gpus() -> list[Row]:
    devices, reason = cuda_devices()
    if not devices:
        return [Row("stack", "gpus", "info", reason)]
    import torch

    rows = []
    for device in devices:
        props = torch.cuda.get_device_properties(device)
        rows.append(Row("stack", f"gpu {device.split(':')[1]}", "info",
                        f"{props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
                        f"{props.major}.{props.minor}", device=device))
    return rows


def _mmcv() -> Row:
    import mmcv

    try:
        from mmcv.ops import get_compiler_version, get_compiling_cuda_version
    except ImportError as exc:
        return Row("stack", "mmcv", "FAIL", one_line(f"{mmcv.__version__}; its compiled ops do not import "
                                                    f"({type(exc).__name__}: {exc}) -> {advice(exc)}", 400))
    compiled_cuda = str(get_compiling_cuda_version())
    detail = f"{mmcv.__version__}; ops compiled with CUDA: {compiled_cuda}, compiler: {get_compiler_version()}"
    devices, _ = cuda_devices()
    if devices and not any(ch.isdigit() for ch in compiled_cuda):
        return Row("stack", "mmcv", "FAIL", one_line(f"{detail}; torch sees a GPU but mmcv's ops were built "
                                                    f"without CUDA -> {CUDA_MMCV}", 400))
    return Row("stack", "mmcv", "ok", detail)


def _package(name: str, optional: bool = False) -> Row:
    version = _version(name)
    if version is None:
        if optional:
            return Row("stack", name, "info", "not installed (optional)")
        return Row("stack", name, "FAIL", f"not installed -> {REINSTALL}")
    module = {"mmengine": "mmengine", "mmdet": "mmdet", "sympy": "sympy", "deap": "deap", "ray": "ray"}[name]
    __import__(module)
    return Row("stack", name, "ok", version)


def stack_rows() -> list[Row]:
    """The installed stack, one probe per row (a probe that raises is a FAIL row)."""
    rows = [_guarded("python", _python), _guarded("torch", _torch)]
    try:
        rows.extend(_gpus())
    except Exception as exc:  # noqa: BLE001
        rows.append(Row("stack", "gpus", "FAIL", failure(exc)))
    rows.append(_guarded("mmcv", _mmcv))
    for name in ("mmengine", "mmdet", "sympy", "deap"):
        rows.append(_guarded(name, lambda name=name: _package(name)))
    rows.append(_guarded("ray", lambda: _package("ray", optional=True)))
    return rows


# ------------------------------------------------------------------------------------ the live checks


class Scratch:
    """The small data sets the checks share, written once below ``root`` when first needed."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._coco = None
        self._tracking = None

    def coco(self):
        if self._coco is None:
            from autoloss.detection.coco import find_coco_splits
            from autoloss.detection.synthetic import make_synthetic_coco

            make_synthetic_coco(self.root / "coco", num_train=4, num_val=2, seed=0)
            self._coco = find_coco_splits(self.root / "coco")
        return self._coco

    def tracking(self) -> Path:
        if self._tracking is None:
            from autoloss.tracking.synthetic import generate_split

            root = self.root / "tracking"
            generate_split(root, "weights", sequences=2, frames=12, size=128)
            self._tracking = root
        return self._tracking


@dataclass
class Timed:
    """What a check returns: its detail and the seconds of each training step it took."""

    detail: str
    step_times: list[float] = field(default_factory=list)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _steps(step: Callable[[], None], device: str, steps: int) -> list[float]:
    """Run ``step`` once, then ``steps - 1`` more times; the seconds of each timed step (all of them
    with one step, else those after the first, which pays for the kernels' first call)."""
    times = []
    for _ in range(max(steps, 1) + (1 if steps > 1 else 0)):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times[1:] if steps > 1 else times


def _finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is {value}")


def _detector_step(name: str) -> Callable[[str, Scratch, int], Timed]:
    def check(device: str, scratch: Scratch, steps: int) -> Timed:
        import torch
        from mmengine.runner import Runner

        from autoloss.detection.mmdet.detectors import build_detector, load_detector_config, searched_head

        cfg = load_detector_config(name, scratch.coco(), scratch.root / f"work-{name}", batch_size=2,
                                   cls_loss=DETECTOR_LOSSES[name], reg_loss=REG_LOSS, iou_aware_heads=True)
        cfg.train_dataloader.num_workers = 0
        cfg.train_dataloader.persistent_workers = False
        torch.manual_seed(0)
        model = build_detector(cfg).to(device)
        model.train()
        head = searched_head(cfg).type
        batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        losses = []

        def step():
            optimizer.zero_grad()
            data = model.data_preprocessor(batch, True)
            loss, _ = model.parse_losses(model(**data, mode="loss"))
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))

        times = _steps(step, device, steps)
        _finite(losses[-1], "the loss")
        where = {str(p.device) for p in model.parameters()}
        if where != {str(torch.device(device))}:
            raise RuntimeError(f"the model's parameters ended on {sorted(where)}, not {device}")
        return Timed(f"{head}, cls {DETECTOR_LOSSES[name]['expression']}, reg GIoU; loss {losses[-1]:.3f}", times)

    return check


def _roi_align(device: str, scratch: Scratch, steps: int) -> Timed:
    import torch
    from mmcv.ops import roi_align

    # f(y, x) = x: the bilinear mean over a bin is the x of its centre (aligned: pixel centres at i + 0.5)
    feature = torch.arange(16, dtype=torch.float32, device=device).repeat(1, 1, 16, 1).requires_grad_(True)
    rois = torch.tensor([[0.0, 4.0, 4.0, 12.0, 12.0]], device=device)
    out = roi_align(feature, rois, (2, 2), 1.0, 2, "avg", True)
    expected = torch.tensor([[5.5, 9.5], [5.5, 9.5]], device=device)
    if not torch.allclose(out[0, 0], expected, atol=1e-4):
        raise ArithmeticError(f"RoIAlign gave {out[0, 0].tolist()}, expected {expected.tolist()}")
    out.sum().backward()
    if feature.grad is None or abs(float(feature.grad.sum()) - 4.0) > 1e-3:
        raise ArithmeticError("RoIAlign's gradient does not sum to the 4 bins")
    return Timed("forward equals the exact bilinear value; backward sums to 1 per bin")


def _nms(device: str, scratch: Scratch, steps: int) -> Timed:
    import torch
    from mmcv.ops import nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32, device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    _, keep = nms(boxes, scores, 0.5)
    if keep.device.type != torch.device(device).type or keep.tolist() != [0, 2]:
        raise ArithmeticError(f"NMS kept {keep.tolist()} on {keep.device}, expected [0, 2] on {device}")
    return Timed("keeps the expected boxes")


def _tracking_settings(device: str):
    from autoloss.tracking.train import TrackingSettings

    return TrackingSettings(device=device)  # the dimp_small demo's sizes


def _tracker_step(device: str, scratch: Scratch, steps: int) -> Timed:
    import torch

    from autoloss.tracking.train import batch_images, build_net, classification_loss, make_sampler, size_loss

    settings = _tracking_settings(device)
    torch.manual_seed(0)
    net = build_net(settings, DARTS_V2).to(device).train()
    batch = make_sampler(settings, scratch.tracking(), seed=0).batch(0, settings.baseline_batch).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.baseline_lr)
    losses = []

    def step():
        stride8, stride16 = net.backbone_maps(batch_images(batch))
        loss = classification_loss(net, stride8, stride16, batch, settings) + size_loss(net, stride16, batch, settings)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()
        losses.append(float(loss.detach()))

    times = _steps(step, device, steps)
    _finite(losses[-1], "the loss")
    return Timed(f"DARTS-V2 cell in the neck; loss {losses[-1]:.3f}", times)


def _darts2_step(device: str, scratch: Scratch, steps: int) -> Timed:
    import torch

    from autoloss.differentiable.architect import Architect
    from autoloss.tracking.supernet_model import TrackerSupernet, supernet_loss
    from autoloss.tracking.train import batch_images, build_net, make_sampler

    settings = _tracking_settings(device)
    torch.manual_seed(0)
    net = build_net(settings).to(device).eval()
    sampler = make_sampler(settings, scratch.tracking(), seed=0)
    entries = []
    with torch.no_grad():
        for index in range(2):  # a weight batch and an architecture batch, as split_maps caches them
            batch = sampler.batch(index, settings.batch)
            stride8, stride16 = net.backbone_maps(batch_images(batch).to(device))
            entries.append({"stride8": stride8.cpu().half(), "stride16": stride16.cpu().half(),
                            "train_boxes": batch.train_boxes, "test_boxes": batch.test_boxes})
    model = TrackerSupernet(settings, net.backbone.out_channels).to(device)
    architect = Architect(model, lambda m, entry: supernet_loss(m, entry, settings),
                          torch.optim.Adam(model.weight_parameters(), lr=settings.lr),
                          torch.optim.Adam(model.arch_parameters(), lr=3e-4), order=2)
    before = [p.detach().clone() for p in model.arch_parameters()]
    losses = []

    def step():
        losses.append(architect.shared_step(entries[0], entries[1], grad_clip=5.0))

    times = _steps(step, device, steps)
    train_loss, arch_loss = losses[-1]
    _finite(train_loss, "the weight loss")
    _finite(arch_loss, "the architecture loss")
    if all(torch.equal(a, b) for a, b in zip(before, model.arch_parameters())):
        raise ArithmeticError("the architecture parameters did not move")
    return Timed(f"second-order architect on the tracker's supernet; losses {train_loss:.3f} / {arch_loss:.3f}", times)


@dataclass(frozen=True)
class Check:
    name: str
    label: str
    run: Callable[[str, Scratch, int], Timed]
    trains: bool = True  # a training step (timed with steps > 1)


CHECKS = (
    Check("faster_rcnn_small", "faster_rcnn_small step (CEI, IoU-aware head)", _detector_step("faster_rcnn_small")),
    Check("fcos_small", "fcos_small step (FLI, IoU-aware head)", _detector_step("fcos_small")),
    Check("roi_align", "mmcv RoIAlign", _roi_align, trains=False),
    Check("nms", "mmcv NMS", _nms, trains=False),
    Check("tracker", "tracker step (DARTS cell)", _tracker_step),
    Check("darts2", "darts2 step (tracker supernet)", _darts2_step),
)
CHECK_NAMES = tuple(check.name for check in CHECKS)


def run_check(check: Check, device: str, scratch: Scratch, steps: int = 1) -> Row:
    """One check on one device, isolated: whatever it raises becomes the row's one-line reason."""
    start = time.perf_counter()
    try:
        # quiet: pycocotools prints to stdout, torch and mmdet warn; the table is the output
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if device.startswith("cuda"):
                import torch

                with torch.cuda.device(torch.device(device)):
                    timed = check.run(device, scratch, steps if check.trains else 1)
            else:
                timed = check.run(device, scratch, steps if check.trains else 1)
    except Exception as exc:  # noqa: BLE001  (one failing check never stops the others)
        return Row("check", check.label, "FAIL", failure(exc, device), device, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    step = statistics.median(timed.step_times) if timed.step_times else None
    return Row("check", check.label, "ok", timed.detail, device, seconds, step, len(timed.step_times))


def run_checks(devices: list[str], scratch: Scratch, names: tuple[str, ...] = CHECK_NAMES, steps: int = 1,
               on_row: Callable[[Row], None] | None = None) -> list[Row]:
    """Every check named in ``names`` on every device in ``devices``, in that order."""
    rows = []
    for device in devices:
        for check in CHECKS:
            if check.name in names:
                row = run_check(check, device, scratch, steps)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows
