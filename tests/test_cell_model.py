"""The cell as a module: operations, the discrete Cell, its counts, the soundness of the canonical form, the picture."""

from __future__ import annotations

import random
import zlib

import pytest
import torch
from torch import nn

from autoloss.cell.breeding import random_genotype
from autoloss.cell.canonical import canonical, zero_nodes
from autoloss.cell.draw import draw_cell
from autoloss.cell.genotype import Genotype, from_nodes, parse_genotype
from autoloss.cell.model import Cell, count_flops, count_parameters
from autoloss.cell.operations import OPERATIONS, PRIMITIVES
from autoloss.errors import UserError



pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny tensors, one torch thread


DARTS_V2_NORMAL = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5])"
)


def test_primitives_order_and_table():
    assert PRIMITIVES == ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                          "dil_conv_3x3", "dil_conv_5x5"]
    assert list(OPERATIONS) == PRIMITIVES


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride, size, out", [(1, 9, 9), (2, 9, 5), (2, 8, 4)])
def test_operation_shapes(name, stride, size, out):
    x = torch.randn(2, 6, size, size)
    for pool_bn in (False, True):
        y = OPERATIONS[name](6, stride, True, pool_bn=pool_bn)(x)
        assert y.shape == (2, 6, out, out)


def test_operation_semantics():
    x = torch.randn(2, 4, 7, 7)
    assert torch.equal(OPERATIONS["skip_connect"](4, 1, True)(x), x)
    assert torch.count_nonzero(OPERATIONS["none"](4, 1, True)(x)) == 0
    avg = OPERATIONS["avg_pool_3x3"](4, 1, True)(torch.ones(1, 4, 5, 5))
    assert torch.allclose(avg, torch.ones(1, 4, 5, 5))  # the padding is not counted
    assert isinstance(OPERATIONS["max_pool_3x3"](4, 1, True), nn.MaxPool2d)
    with_bn = OPERATIONS["max_pool_3x3"](4, 1, False, pool_bn=True)
    assert isinstance(with_bn[-1], nn.BatchNorm2d) and not with_bn[-1].affine
    dil = OPERATIONS["dil_conv_5x5"](4, 1, True)
    depthwise = [m for m in dil.modules() if isinstance(m, nn.Conv2d)][0]
    assert depthwise.dilation == (2, 2) and depthwise.groups == 4 and depthwise.kernel_size == (5, 5)
    sep = OPERATIONS["sep_conv_3x3"](4, 2, True)
    convs = [m for m in sep.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in sep.modules()) == 2


def test_darts_v2_cell_outputs_four_times_the_channels():
    g = parse_genotype(DARTS_V2_NORMAL)
    cell = Cell(g, channels=8)
    assert cell.out_channels == 32
    y = cell(torch.randn(2, 8, 9, 11), torch.randn(2, 8, 9, 11))
    assert y.shape == (2, 32, 9, 11)
    y.sum().backward()
    assert all(p.grad is not None for p in cell.parameters())
    with pytest.raises(ValueError, match="Cell expects"):
        cell(torch.randn(2, 8, 9, 9), torch.randn(2, 8, 5, 5))


def test_none_edges_build_nothing_and_zero_nodes_output_zeros():
    g = from_nodes([[("none", 0), ("none", 1)], [("skip_connect", 0), ("none", 2)],
                    [("sep_conv_3x3", 1), ("max_pool_3x3", 2)], [("skip_connect", 4), ("avg_pool_3x3", 3)]])
    cell = Cell(g, 4)
    assert len(cell.edges) == 5 and [spec[1] for spec in cell.edge_specs].count("none") == 0
    s0, s1 = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    y = cell(s0, s1)
    assert torch.count_nonzero(y[:, :4]) == 0
    assert torch.equal(y[:, 4:8], s0)


def test_drop_path_only_in_training_and_not_on_skips():
    g = from_nodes([[("skip_connect", 0), ("skip_connect", 1)]] * 2 + [[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]] * 2)
    cell = Cell(g, 4, drop_path_prob=0.5)
    s0, s1 = torch.randn(64, 4, 5, 5), torch.randn(64, 4, 5, 5)
    cell.train()
    torch.manual_seed(0)
    y = cell(s0, s1)
    assert torch.equal(y[:, :4], s0 + s1)  # skips are never dropped
    dropped = (y[:, 8:].flatten(1).abs().sum(1) == 0).sum().item()
    assert 0 < dropped < 64  # some samples lose both conv edges of a node
    cell.eval()
    assert torch.equal(cell(s0, s1), cell(s0, s1))


# ----------------------------------------------------------------------------------- counts


def test_count_flops_hand_count_for_one_op():
    # one sep_conv_3x3 edge, C = 4, 5 x 5: twice (depthwise 9 * 4 + pointwise 4 * 4) MACs per pixel
    g = from_nodes([[("sep_conv_3x3", 0), ("skip_connect", 1)]] + [[("skip_connect", 0), ("none", 1)]] * 3)
    assert count_flops(g, 4, 5, 5) == 2 * (9 * 4 + 4 * 4) * 25 == 2600
    # one dil_conv_5x5 edge, C = 8, 3 x 4: (25 * 8 + 8 * 8) per pixel
    g = from_nodes([[("dil_conv_5x5", 0), ("max_pool_3x3", 1)]] + [[("avg_pool_3x3", 0), ("none", 1)]] * 3)
    assert count_flops(g, 8, 3, 4) == (25 * 8 + 64) * 12


def _hooked_macs(cell: Cell, h: int, w: int) -> int:
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in cell.modules() if isinstance(m, nn.Conv2d)]
    cell(torch.randn(1, cell.channels, h, w), torch.randn(1, cell.channels, h, w))
    for handle in handles:
        handle.remove()
    return total


def test_counts_agree_with_the_built_module():
    rng = random.Random(0)
    for _ in range(12):
        g = random_genotype(rng)
        for affine in (True, False):
            cell = Cell(g, 6, affine=affine)
            assert count_parameters(g, 6, affine) == sum(p.numel() for p in cell.parameters())
        assert count_flops(g, 6, 7, 5) == _hooked_macs(Cell(g, 6), 7, 5)


# ----------------------------------------------------------------------------------- soundness


def _seed_edges(cell: Cell, genotype: Genotype) -> None:
    """Give every edge parameters (and BN statistics) determined by what it computes, not by its position.

    An edge reading an identically-zero node is keyed as reading "zero": the canonical form may move it
    to another zero node, which holds the same zeros.
    """
    zero = zero_nodes(genotype)
    for (node, op, source), module in zip(cell.edge_specs, cell.edges):
        tag = f"{node}:{op}:{'zero' if source in zero else source}"
        generator = torch.Generator().manual_seed(zlib.crc32(tag.encode()))
        with torch.no_grad():
            for tensor in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)


@pytest.mark.parametrize("train", [False, True])
def test_equal_canonical_forms_compute_the_same_function(train):
    """Random cells (with many 'none' edges, so zero nodes occur) against their canonical forms and variants."""
    rng = random.Random(7)
    ops = PRIMITIVES
    weights = [3.0 if op == "none" else 1.0 for op in ops]
    s0, s1 = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    checked_zero = 0
    for _ in range(30):
        pairs = tuple((rng.choices(ops, weights)[0], rng.randrange(k // 2 + 2)) for k in range(8))
        g = Genotype(normal=pairs)
        variants = [canonical(g), Genotype(normal=tuple(p for k in range(4) for p in reversed(g.node(k))))]
        outputs = []
        for genotype in [g] + variants:
            cell = Cell(genotype, 4)
            _seed_edges(cell, genotype)
            cell.train(train)
            outputs.append(cell(s0, s1))
        for other in outputs[1:]:
            assert torch.allclose(outputs[0], other, atol=1e-5)
        checked_zero += bool(zero_nodes(g))
    assert checked_zero >= 4  # the zero-node rules were exercised


def test_a_conv_on_a_zero_node_is_not_zero():
    # why rule 3 keeps conv edges on zero nodes: BN's shift makes them non-zero
    g = from_nodes([[("none", 0), ("none", 1)], [("sep_conv_3x3", 2), ("none", 0)],
                    [("skip_connect", 0), ("none", 0)], [("skip_connect", 1), ("none", 0)]])
    cell = Cell(g, 4)
    with torch.no_grad():
        for m in cell.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.fill_(0.3)
    assert torch.count_nonzero(cell(torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5))[:, 4:8]) > 0
    assert canonical(g).node(1)[1] == ("sep_conv_3x3", 2)


def test_invalid_genotype_does_not_build():
    with pytest.raises(UserError, match="reads input 5"):
        Cell(Genotype(normal=(("none", 0),) * 7 + (("skip_connect", 5),)), 4)


# ----------------------------------------------------------------------------------- picture


def test_draw_cell_writes_a_png(tmp_path):
    import matplotlib.image

    path = draw_cell(parse_genotype(DARTS_V2_NORMAL), tmp_path / "sub" / "cell.png", title="DARTS_V2")
    assert path.stat().st_size > 0
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert image[..., :3].std() > 0.05  # something was drawn
    zero = from_nodes([[("none", 0), ("none", 1)]] + [[("sep_conv_5x5", 0), ("dil_conv_3x3", 1)]] * 3)
    assert draw_cell(zero, tmp_path / "zero.png").stat().st_size > 0
