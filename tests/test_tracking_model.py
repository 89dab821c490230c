"""The tracking proxy's network: backbone, adapters, neck slot, DiMP-style classifier, box estimation, crops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autoloss.errors import UserError
from autoloss.tracking.backbone import InputAdapters, TrackingBackbone, load_backbone_checkpoint
from autoloss.tracking.boxes import SizeHead, peak_position, sample_at
from autoloss.tracking.classifier import (
    FilterInitializer,
    KLSteepestDescent,
    TargetClassifier,
    apply_filter,
    classifier_loss,
    filter_gradient,
    gaussian_label_density,
    iterate_weights,
    kl_grid_loss,
)
from autoloss.tracking.model import TrackerNet
from autoloss.tracking.necks import HandNeck, make_neck
from autoloss.tracking.sampling import CropWindow, crop, window_around

DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5])"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny tensors, one torch thread


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same torch seed."""
    torch.manual_seed(0)


# -------------------------------------------------------------------------------- backbone, neck


def test_backbone_returns_block3_and_block4_at_strides_8_and_16():
    backbone = TrackingBackbone(depth=18)
    stride8, stride16 = backbone(torch.rand(2, 3, 64, 64) * 255)
    assert backbone.out_channels == (128, 256)
    assert stride8.shape == (2, 128, 8, 8) and stride16.shape == (2, 256, 4, 4)
    assert TrackingBackbone(depth=50, base_channels=16).out_channels == (128, 256)  # expansion 4


def test_adapters_bring_both_blocks_to_c_channels_at_stride_16():
    adapters = InputAdapters((128, 256), 16)
    s0, s1 = adapters(torch.randn(2, 128, 8, 8), torch.randn(2, 256, 4, 4))
    assert s0.shape == s1.shape == (2, 16, 4, 4)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.ReLU)) for m in adapters.modules())


def test_hand_neck_and_a_darts_cell_fill_the_slot_with_4c_channels():
    s0, s1 = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    hand = make_neck("hand", 8)
    assert isinstance(hand, HandNeck) and hand.out_channels == 32
    assert hand(s0, s1).shape == (2, 32, 4, 4)
    cell = make_neck(DARTS_V2, 8)
    assert cell.out_channels == 32 and cell(s0, s1).shape == (2, 32, 4, 4)


def test_a_neck_spec_that_does_not_parse_is_a_user_error():
    with pytest.raises(UserError):
        make_neck("Genotype(normal=[('no_such_op', 0)])", 8)


def test_tracker_net_searches_adapters_neck_and_classifier_only():
    net = TrackerNet(depth=18, channels=8)
    searched = {id(p) for p in net.searched_parameters()}
    assert searched.isdisjoint(id(p) for p in net.backbone.parameters())
    assert searched.isdisjoint(id(p) for p in net.size_head.parameters())
    assert {id(p) for p in net.neck.parameters()} <= searched
    old_neck = net.neck
    net.replace_neck(DARTS_V2)
    assert net.neck is not old_neck and net.neck_spec == DARTS_V2
    feat = net.classifier_features(*net.backbone_maps(torch.rand(3, 3, 64, 64) * 255))
    assert feat.shape == (3, 32, 4, 4)


# ------------------------------------------------------------------------------ checkpoints


def _save(path, state):
    torch.save(state, path)
    return path


def test_a_fitting_checkpoint_loads_under_a_prefix_with_the_unused_last_stage(tmp_path):
    source = TrackingBackbone(depth=18)
    state = {f"backbone.{k}": v for k, v in source.resnet.state_dict().items()}
    state["backbone.layer4.0.conv1.weight"] = torch.zeros(1)  # a full ResNet's last stage: skipped
    state["backbone.fc.weight"] = torch.zeros(1)
    target = TrackingBackbone(depth=18)
    load_backbone_checkpoint(target, _save(tmp_path / "r18.pth", {"state_dict": state}))
    assert torch.equal(target.resnet.conv1.weight, source.resnet.conv1.weight)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("text", "not a PyTorch checkpoint"),
        ("depth", "unexpected weights"),
        ("partial", "weights missing"),
        ("width", "has shape"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_a_one_line_user_error(tmp_path, case, message):
    path = tmp_path / "backbone.pth"
    if case == "text":
        path.write_text("not a checkpoint\n")
    elif case == "depth":
        _save(path, TrackingBackbone(depth=34).resnet.state_dict())
    elif case == "partial":
        state = TrackingBackbone(depth=18).resnet.state_dict()
        _save(path, {k: v for k, v in state.items() if not k.startswith("layer3.")})
    elif case == "width":
        _save(path, TrackingBackbone(depth=18, base_channels=32).resnet.state_dict())
    with pytest.raises(UserError) as error:
        load_backbone_checkpoint(TrackingBackbone(depth=18), path)
    assert message in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------- classifier


def test_filter_gradient_is_the_transpose_of_the_correlation():
    feat = torch.randn(3, 2, 5, 6, 6, dtype=torch.float64)
    filters = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    residual = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    scores = apply_filter(feat, filters)
    assert scores.shape == (3, 2, 6, 6)
    (expected,) = torch.autograd.grad((scores * residual).sum(), filters)
    assert torch.allclose(filter_gradient(feat, residual, 3), expected, atol=1e-12)


def test_kl_grid_loss_matches_a_hand_computation():
    scores = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    mass = torch.tensor([[0.5, 0.5], [0.0, 0.0]], dtype=torch.float64)
    lse = math.log(math.e + 1 + 1 + math.e**2)
    assert float(kl_grid_loss(scores, mass)) == pytest.approx(lse - 0.5)
    # a density on cells of area 0.25 (mass / area): logsumexp(s) + log(a) - a * sum(s * p)
    area = 0.25
    assert float(kl_grid_loss(scores, mass / area, cell_area=area)) == pytest.approx(lse + math.log(area) - 0.5)
    # against the KL divergence itself: loss - (-entropy of p) = KL(p || softmax(s))
    p = torch.tensor([[0.7, 0.1], [0.1, 0.1]], dtype=torch.float64)
    q = torch.softmax(scores.flatten(), 0).view(2, 2)
    kl = float((p * (p / q).log()).sum())
    assert float(kl_grid_loss(scores, p)) == pytest.approx(kl - float((p * p.log()).sum()))


def test_label_density_has_mass_one_and_peaks_at_the_centre():
    density = gaussian_label_density(torch.tensor([[2.0, 1.0]]), (5, 6), sigma=0.8)
    assert density.shape == (1, 5, 6)
    assert float(density.sum()) == pytest.approx(1.0)
    assert divmod(int(density[0].argmax()), 6) == (1, 2)  # row y = 1, column x = 2


def test_a_steepest_descent_step_decreases_the_regularised_kl():
    feat = torch.randn(3, 2, 8, 6, 6, dtype=torch.float64) * 0.3
    density = gaussian_label_density(torch.tensor([[2.0, 3.0], [4.0, 1.0]], dtype=torch.float64).expand(3, 2, 2), (6, 6), 0.7)
    optimizer = KLSteepestDescent(init_step=1.0, init_reg=0.1).double()
    filters = torch.randn(2, 8, 3, 3, dtype=torch.float64) * 0.1
    values = [optimizer.objective(filters, feat, density)]
    for f in optimizer(filters, feat, density, iterations=4)[1:]:
        values.append(optimizer.objective(f, feat, density))
    for before, after in zip(values, values[1:]):
        assert torch.all(after < before)


def test_filter_initialiser_pools_each_box_and_averages_over_frames():
    init = FilterInitializer(dim=4, filter_size=3, stride=16)
    torch.nn.init.dirac_(init.conv.weight)
    torch.nn.init.zeros_(init.conv.bias)
    feat = torch.zeros(2, 1, 4, 4, 4)
    feat[0] += 1.0  # frame 0: constant 1, frame 1: constant 3
    feat[1] += 3.0
    boxes = torch.tensor([[[16.0, 16.0, 24.0, 24.0]], [[8.0, 20.0, 20.0, 16.0]]])
    filters = init(feat, boxes)
    assert filters.shape == (1, 4, 3, 3)
    assert torch.allclose(filters, torch.full_like(filters, 2.0))


def test_classifier_scores_every_iterate_and_weights_them_as_prdimp():
    classifier = TargetClassifier(dim=16, filter_size=3, stride=16)
    feat = classifier.features(torch.randn(6, 16, 4, 4)).view(3, 2, 16, 4, 4)
    boxes = torch.tensor([20.0, 20.0, 16.0, 16.0]).expand(3, 2, 4)
    density = gaussian_label_density(torch.full((3, 2, 2), 1.25), (4, 4), 0.5)
    scores = classifier(feat, feat, boxes, density, iterations=3)
    assert len(scores) == 4 and all(s.shape == (3, 2, 4, 4) for s in scores)
    assert iterate_weights(4) == [0.25, 0.5, 0.5, 0.25]
    assert iterate_weights(2) == [0.25, 0.25]
    loss = classifier_loss(scores, density)
    loss.backward()
    assert classifier.optimizer.log_step.grad is not None and classifier.initializer.conv.weight.grad is not None
    expected = sum(w * kl_grid_loss(s, density).mean() for w, s in zip([0.25, 0.5, 0.5, 0.25], scores))
    assert loss.item() == pytest.approx(expected.item())


# --------------------------------------------------------------------------------- box estimation


def test_peak_position_refines_towards_the_heavier_neighbour():
    scores = torch.full((5, 6), -10.0)
    scores[2, 3] = 5.0
    x, y, prob = peak_position(scores)
    assert (x, y) == pytest.approx((3.0, 2.0)) and prob > 0.9
    scores[2, 4] = 4.0
    x, y, _ = peak_position(scores)
    assert 3.0 < x < 3.5 and y == pytest.approx(2.0)


def test_sample_at_reads_bilinearly_in_cell_units():
    maps = torch.arange(12.0).view(1, 1, 3, 4)
    values = sample_at(maps.expand(2, 1, 3, 4), torch.tensor([[1.0, 2.0], [1.5, 0.5]]))
    assert values[:, 0].tolist() == pytest.approx([9.0, (1 + 2 + 5 + 6) / 4])
    assert SizeHead(32)(torch.randn(2, 32, 4, 4)).shape == (2, 2, 4, 4)


# ------------------------------------------------------------------------------------- crops


def test_crop_windows_map_boxes_both_ways_and_crop_where_they_say():
    box = np.array([30.0, 40.0, 20.0, 10.0])
    window = window_around(box, search_factor=4.0, out_size=64)
    assert window.side == pytest.approx(4 * math.sqrt(200))
    assert np.allclose(window.to_frame(window.to_crop(box)), box)
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    image[40:50, 30:50] = 255  # exactly the box
    patch = crop(image, window)
    inside = window.to_crop(box)
    x0, y0, x1, y1 = (int(round(v)) for v in (inside[0], inside[1], inside[0] + inside[2], inside[1] + inside[3]))
    assert patch[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].min() > 200
    assert patch[: y0 - 2].max() < 60 and patch[y1 + 2 :].max() < 60
    # outside the frame: the frame's mean colour
    far = crop(image, CropWindow(-500.0, -500.0, 50.0, 16))
    assert np.all(np.abs(far.astype(float) - image.reshape(-1, 3).mean(0)) <= 1)
