"""The tracker's backbone: MMDetection's ResNet up to its stride-16 stage, and CHASE's input adapters.

CHASE's Block3 and Block4 are ResNet's stride-8 and stride-16 stages (``out_indices=(1, 2)``); the
released code adapts them to the cell's width C with a 3x3 stride-2 conv on the stride-8 map and a
1x1 conv on the stride-16 map, without BN or ReLU (``InputAdapters``, part of the trainable neck).
The backbone stops after the stride-16 stage (``num_stages=3``): the tracker never reads ResNet's
last stage, so a checkpoint's ``layer4.*`` and ``fc.*`` weights are skipped when one is loaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from autoloss.errors import UserError

STAGES = 3
OUT_INDICES = (1, 2)
STRIDES = (8, 16)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# Weights a full ResNet checkpoint holds for parts this backbone does not build.
SKIPPED_PREFIXES = ("layer4.", "fc.")
# Prefixes under which checkpoints of detectors and trackers keep the backbone's weights.
KNOWN_PREFIXES = ("module.", "backbone.", "feature_extractor.", "net.")


class TrackingBackbone(nn.Module):
    """MMDetection's ResNet (no torchvision, no download) returning its stride-8 and stride-16 maps.

    ``forward`` takes uint8-range RGB images ``[N, 3, H, W]`` (float) and normalises them itself.
    """

    def __init__(self, depth: int = 18, base_channels: int = 64):
        super().__init__()
        import mmdet.models  # noqa: F401  (registers MMDetection's modules)
        from mmdet.models.backbones import ResNet

        if depth not in ResNet.arch_settings:
            raise UserError(f"ResNet depth {depth} is not one of {sorted(ResNet.arch_settings)}")
        self.depth = depth
        self.resnet = ResNet(
            depth=depth,
            num_stages=STAGES,
            strides=(1, 2, 2),
            dilations=(1, 1, 1),
            out_indices=OUT_INDICES,
            base_channels=base_channels,
            norm_eval=False,
            zero_init_residual=False,
            init_cfg=None,
        )
        expansion = ResNet.arch_settings[depth][0].expansion
        self.out_channels = tuple(expansion * base_channels * 2**i for i in OUT_INDICES)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for module in self.resnet.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stride8, stride16 = self.resnet((images - self.mean) / self.std)
        return stride8, stride16


class InputAdapters(nn.Module):
    """Block3 -> 3x3 stride-2 conv -> C, Block4 -> 1x1 conv -> C: the cell's two inputs at stride 16."""

    def __init__(self, in_channels: tuple[int, int], channels: int):
        super().__init__()
        self.block3 = nn.Conv2d(in_channels[0], channels, 3, stride=2, padding=1)
        self.block4 = nn.Conv2d(in_channels[1], channels, 1)

    def forward(self, stride8: torch.Tensor, stride16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.block3(stride8), self.block4(stride16)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"backbone checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (any failure to unpickle means "not a checkpoint")
        raise UserError(f"backbone checkpoint {path} is not a PyTorch checkpoint of tensors ({type(error).__name__})") from None
    for key in ("state_dict", "model", "net"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UserError(f"backbone checkpoint {path} holds no state dict of tensors")
    return loaded


def _strip_prefix(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """Drop the first known prefix (repeatedly) while it makes more keys match the backbone's."""
    for _ in range(len(KNOWN_PREFIXES)):
        best = state
        for prefix in KNOWN_PREFIXES:
            stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if len(wanted & stripped.keys()) > len(wanted & best.keys()):
                best = stripped
        if best is state:
            break
        state = best
    return state


def load_backbone_checkpoint(model: TrackingBackbone, path: str | Path) -> None:
    """Load a ResNet checkpoint (ImageNet, MMDetection or pytracking layout) into ``model``.

    Raises UserError with one line when the file is missing, is not a checkpoint, or does not fit
    the backbone (missing or unexpected weights, or a shape that differs).
    """
    path = Path(path)
    own = model.resnet.state_dict()
    state = _strip_prefix(_read_state_dict(path), set(own))
    state = {k: v for k, v in state.items() if not k.startswith(SKIPPED_PREFIXES) and not k.endswith("num_batches_tracked")}
    own_keys = {k for k in own if not k.endswith("num_batches_tracked")}
    missing = sorted(own_keys - state.keys())
    unexpected = sorted(state.keys() - own_keys)
    where = f"backbone checkpoint {path} does not fit a ResNet-{model.depth}"
    if missing:
        raise UserError(f"{where}: {len(missing)} weights missing (first: {missing[0]})")
    if unexpected:
        raise UserError(f"{where}: {len(unexpected)} unexpected weights (first: {unexpected[0]})")
    for key in sorted(own_keys):
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise UserError(f"{where}: {key} has shape {tuple(state[key].shape)}, expected {tuple(own[key].shape)}")
    model.resnet.load_state_dict(state, strict=False)
