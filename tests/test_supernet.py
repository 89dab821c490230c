"""The cell supernet: mixed edges, alpha as a saved parameter, the parameter split, skip dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoloss.cell.genotype import Genotype
from autoloss.cell.model import Cell
from autoloss.cell.operations import PRIMITIVES
from autoloss.cell.supernet import (CellSupernet, MixedOp, SkipDropout, architecture_parameters,
                                    set_skip_dropout, weight_parameters)
from autoloss.differentiable.derive import edge_inputs, genotype_weights
from autoloss.differentiable.schedule import skip_dropout_rate

GENOTYPE = Genotype(normal=(("sep_conv_3x3", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_5x5", 2),
                            ("dil_conv_5x5", 3), ("sep_conv_3x3", 1), ("skip_connect", 4), ("sep_conv_3x3", 2)))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny tensors, one torch thread


def inputs(channels=4, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, channels, size, size, generator=g), torch.randn(2, channels, size, size, generator=g))


def test_mixed_op_is_the_weighted_sum_of_its_operations():
    torch.manual_seed(0)
    op = MixedOp(4)
    x = inputs()[0]
    weights = torch.softmax(torch.randn(8), dim=0)
    expected = sum(w * o(x) for w, o in zip(weights, op.ops))
    assert torch.allclose(op(x, weights), expected, atol=1e-6)
    # Search BN carries no affine parameters; pools are followed by a BN.
    assert all(not m.affine for m in op.modules() if isinstance(m, nn.BatchNorm2d))
    assert isinstance(op.ops[PRIMITIVES.index("max_pool_3x3")][-1], nn.BatchNorm2d)


def test_supernet_output_alpha_in_state_dict_and_parameter_split():
    torch.manual_seed(0)
    model = CellSupernet(4)
    s0, s1 = inputs()
    out = model(s0, s1)
    assert out.shape == (2, 16, 6, 6)
    assert len(model.cell.edges) == 14 and model.architecture.alpha.shape == (14, 8)
    assert "architecture.alpha" in model.state_dict()
    arch, weights = model.arch_parameters(), model.weight_parameters()
    assert arch == [model.architecture.alpha]
    assert {id(p) for p in arch} | {id(p) for p in weights} == {id(p) for p in model.parameters()}
    assert not {id(p) for p in arch} & {id(p) for p in weights}
    out.square().mean().backward()
    assert model.architecture.alpha.grad is not None and model.architecture.alpha.grad.abs().sum() > 0
    # A state dict round trip restores alpha and the outputs exactly.
    twin = CellSupernet(4)
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin.architecture.alpha, model.architecture.alpha) and torch.equal(twin(s0, s1), out)


def test_supernet_with_genotype_weights_computes_the_discrete_cell():
    torch.manual_seed(1)
    model = CellSupernet(4).train()
    cell = Cell(GENOTYPE, 4, affine=False).train()
    rows = {edge: row for row, edge in enumerate(edge_inputs())}
    for index, (op, source) in enumerate(GENOTYPE.normal):
        supernet_op = model.cell.edges[rows[(index // 2, source)]].ops[PRIMITIVES.index(op)]
        cell.edges[index].load_state_dict(supernet_op.state_dict() if op != "skip_connect" else {})
    s0, s1 = inputs(seed=2)
    with model.fixed_mixing_weights(genotype_weights(GENOTYPE)):
        assert torch.equal(model.mixing_weights(), genotype_weights(GENOTYPE))
        fixed = model(s0, s1)
    assert torch.allclose(fixed, cell(s0, s1), atol=1e-5)
    # Outside the context the supernet mixes by softmax(alpha) again.
    assert torch.allclose(model.mixing_weights(), torch.softmax(model.architecture.alpha, -1))
    assert not torch.allclose(model(s0, s1), fixed, atol=1e-3)


def test_skip_dropout_rate_reaches_the_modules_at_each_epoch():
    model = CellSupernet(4, skip_dropout=0.6)
    container = nn.Sequential(nn.Dropout(0.1), model)  # a model embedding the supernet, with its own dropout
    modules = [m for m in container.modules() if isinstance(m, SkipDropout)]
    assert len(modules) == 14 and all(m.p == 0.6 for m in modules)
    for epoch, expected in [(0, 0.6), (35, 0.6 * (1 - 35 / 69)), (69, 0.0)]:
        assert set_skip_dropout(container, skip_dropout_rate(epoch, 70)) == 14
        assert all(m.p == pytest.approx(expected) for m in modules)
    assert container[0].p == 0.1  # other dropouts are not the schedule's


def test_skip_dropout_acts_on_the_skip_edges_in_training():
    model = CellSupernet(4, skip_dropout=0.5).train()
    weights = torch.zeros(14, 8)
    weights[:, PRIMITIVES.index("skip_connect")] = 1.0
    s0, s1 = inputs()
    with model.fixed_mixing_weights(weights):
        dropped = model(s0, s1)
        set_skip_dropout(model, 0.0)
        kept = model(s0, s1)
    assert torch.allclose(kept[:, :4], s0 + s1)  # node 0 = skip(s0) + skip(s1)
    # With rate 0.5 each skip keeps an element times 2 or drops it: node 0 is one of four sums per element.
    node0 = dropped[:, :4]
    options = torch.stack([torch.zeros_like(s0), 2 * s0, 2 * s1, 2 * (s0 + s1)])
    matches = (options - node0).abs() < 1e-5
    assert matches.any(0).all()
    assert matches[0].float().mean() > 0.1 and matches[3].float().mean() > 0.1  # both extremes happen


def test_architecture_parameters_found_inside_a_larger_model():
    class Tracker(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(16, 1, 1)
            self.cell = CellSupernet(4)

    tracker = Tracker()
    assert architecture_parameters(tracker) == [tracker.cell.architecture.alpha]
    assert tracker.head.weight in weight_parameters(tracker)
    with pytest.raises(ValueError, match="14 x 8"):
        tracker.cell.cell(*inputs(), torch.zeros(14, 7))
