"""The cell genotype: parsing and printing, canonical form, breeding, gates and the representation."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys

import pytest

from autoloss.cell.breeding import OP_WEIGHTS, crossover, initial_population, mutate, random_genotype
from autoloss.cell.canonical import canonical, canonical_key, fingerprint, zero_nodes
from autoloss.cell.gates import BudgetGate, StructureGate, inputs_reaching_output
from autoloss.cell.genotype import Genotype, format_genotype, from_nodes, parse_genotype, problems
from autoloss.cell.cost import count_parameters
from autoloss.cell.operations import PRIMITIVES
from autoloss.cell.representation import INITIAL, CellRepresentation, CellSpace
from autoloss.errors import UserError

# DARTS_V2's normal cell, written as the CHASE code writes its genotypes (normal part only).
DARTS_V2_NORMAL = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5])"
)
# The full published DARTS_V2 (quark0/darts genotypes.py), reduce part included.
DARTS_V2_FULL = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])"
)


def cell(*nodes) -> Genotype:
    return from_nodes(nodes)


def changed_edges(a: Genotype, b: Genotype) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(a.normal, b.normal)) if x != y]


# ----------------------------------------------------------------------------------- parse / print


def test_darts_v2_parses_and_prints_back_identically():
    g = parse_genotype(DARTS_V2_NORMAL)
    assert g.normal[0] == ("sep_conv_3x3", 0) and g.normal[7] == ("dil_conv_3x3", 2)
    assert g.node(2) == (("sep_conv_3x3", 1), ("skip_connect", 0))
    assert g.normal_concat == (2, 3, 4, 5) and g.reduce == ()
    assert format_genotype(g) == DARTS_V2_NORMAL == str(g)


def test_full_darts_form_keeps_its_reduce_part_and_range_concats_parse():
    full = parse_genotype(DARTS_V2_FULL)
    assert str(full) == DARTS_V2_FULL
    assert full.reduce[2] == ("skip_connect", 2)
    ranged = parse_genotype(DARTS_V2_FULL.replace("concat=[2, 3, 4, 5]", "concat=range(2, 6)"))
    assert ranged == full
    # the reduce part does not change the tracking cell
    assert canonical(full) == canonical(parse_genotype(DARTS_V2_NORMAL))
    assert fingerprint(full) == fingerprint(parse_genotype(DARTS_V2_NORMAL))


def test_pasted_forms_parse():
    multiline = """DARTS_V2 = Genotype(
        normal=[
            ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
            ("sep_conv_3x3", 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0),
            ('skip_connect', 0), ('dil_conv_3x3', 2),
        ],
        normal_concat = range(2, 6),
    )"""
    assert parse_genotype(multiline) == parse_genotype(DARTS_V2_NORMAL)
    positional = DARTS_V2_NORMAL.replace("normal=", "").replace("normal_concat=", "")
    assert parse_genotype(positional) == parse_genotype(DARTS_V2_NORMAL)
    swapped_fields = ("Genotype(normal_concat=[2, 3, 4, 5], normal="
                      + DARTS_V2_NORMAL.split("normal=")[1].split(", normal_concat")[0] + ")")
    assert parse_genotype(swapped_fields) == parse_genotype(DARTS_V2_NORMAL)


@pytest.mark.parametrize("text, words", [
    (DARTS_V2_NORMAL.replace("'dil_conv_3x3'", "'conv_7x7'"), "unknown operation 'conv_7x7'"),
    (DARTS_V2_NORMAL.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "node 3 (pair 7) reads input 5"),
    (DARTS_V2_NORMAL.replace("('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ", "", 1), "needs 8"),
    (DARTS_V2_NORMAL.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', 0), ('none', 0)", 1), "got 9"),
    (DARTS_V2_NORMAL.replace("[2, 3, 4, 5]", "[4, 5]"), "normal_concat must be [2, 3, 4, 5]"),
    ("", "empty"),
    ("Genotype(normal=[('sep_conv_3x3', 0)", "expected"),
    (DARTS_V2_NORMAL + ")", "expected the end of the text"),
    (DARTS_V2_NORMAL.replace("normal_concat", "normal_kernel"), "unknown field 'normal_kernel'"),
    (DARTS_V2_NORMAL.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', 0, 1)", 1), "a pair is"),
    (DARTS_V2_NORMAL.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', 0.5)", 1), "unexpected character '.'"),
    (DARTS_V2_NORMAL.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', -1)", 1), "unexpected character '-'"),
    (DARTS_V2_NORMAL.replace("[2, 3, 4, 5]", "[2, 3, 4, 5], normal=[]"), "given twice"),
    (DARTS_V2_FULL.replace(", reduce_concat=[2, 3, 4, 5]", ""), "both 'reduce' and 'reduce_concat'"),
    ("__import__('os')", "expected 'Genotype(', found '__import__'"),
    ("__import__('os').system('echo hi')", "unexpected character '.'"),
    ("genotypes.Genotype(normal=[])", "needs 8"),
    ("Genotype(normal=[('skip_connect', 1)] * 8)", "unexpected character '*'"),
    ("Genotype(normal=[('skip_connect', 10000000000)])", "far too large"),
    ("Genotype(normal=[" + "('none', 0), " * 2000 + "])", "too long"),
])
def test_bad_genotype_text_is_one_line_user_error(text, words):
    with pytest.raises(UserError) as caught:
        parse_genotype(text)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message and message.startswith("genotype:")


def test_reduce_part_is_checked_like_the_normal_one():
    with pytest.raises(UserError, match="reduce: unknown operation 'sep_conv_7x7'"):
        parse_genotype(DARTS_V2_FULL.replace("('max_pool_3x3', 0)", "('sep_conv_7x7', 0)", 1))


# ----------------------------------------------------------------------------------- canonical form

SEP = "sep_conv_3x3"


def test_swapped_inputs_and_none_indices_are_equivalent():
    g = parse_genotype(DARTS_V2_NORMAL)
    swapped = from_nodes([tuple(reversed(g.node(k))) for k in range(4)])
    assert swapped != g
    assert canonical(swapped) == canonical(g) and fingerprint(swapped) == fingerprint(g)
    a = cell([(SEP, 0), ("none", 1)], [(SEP, 1), (SEP, 2)], [("none", 3), ("skip_connect", 0)], [(SEP, 4), ("none", 0)])
    b = cell([("none", 0), (SEP, 0)], [(SEP, 2), (SEP, 1)], [("none", 0), ("skip_connect", 0)], [("none", 3), (SEP, 4)])
    assert canonical_key(a) == canonical_key(b) and fingerprint(a) == fingerprint(b)
    assert canonical(a).node(0) == (("none", 0), (SEP, 0))


def test_edges_on_a_zero_node():
    base = [("none", 0), ("none", 1)]
    # pools and skips on an identically-zero node output zeros: they are 'none'; node 1 becomes zero too
    a = cell(base, [("skip_connect", 2), ("max_pool_3x3", 2)], [(SEP, 0), (SEP, 1)], [(SEP, 4), ("avg_pool_3x3", 3)])
    b = cell(base, [("none", 0), ("none", 0)], [(SEP, 0), (SEP, 1)], [(SEP, 4), ("none", 1)])
    assert zero_nodes(a) == {2, 3}
    assert canonical(a) == canonical(b)
    # a conv on a zero node is not zero, but it does not matter which zero node it reads
    c = cell(base, [("none", 0), ("none", 1)], [(SEP, 0), (SEP, 1)], [(SEP, 3), ("dil_conv_3x3", 2)])
    d = cell(base, [("none", 0), ("none", 1)], [(SEP, 0), (SEP, 1)], [(SEP, 2), ("dil_conv_3x3", 3)])
    assert canonical(c) == canonical(d)
    assert canonical(c) != canonical(cell(base, base, [(SEP, 0), (SEP, 1)], [("none", 0), ("dil_conv_3x3", 2)]))


@pytest.mark.parametrize("a, b", [
    # a different operation, a different input, a skip on a live node vs none, sum of equal edges vs one edge
    (DARTS_V2_NORMAL, DARTS_V2_NORMAL.replace("('dil_conv_3x3', 2)", "('dil_conv_5x5', 2)")),
    (DARTS_V2_NORMAL, DARTS_V2_NORMAL.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 3)")),
    (DARTS_V2_NORMAL, DARTS_V2_NORMAL.replace("('skip_connect', 0), ('dil", "('none', 0), ('dil")),
    (DARTS_V2_NORMAL, DARTS_V2_NORMAL.replace("('skip_connect', 0), ('dil", "('dil_conv_3x3', 2), ('dil")),
])
def test_different_cells_have_different_canonical_forms(a, b):
    assert canonical(parse_genotype(a)) != canonical(parse_genotype(b))
    assert fingerprint(parse_genotype(a)) != fingerprint(parse_genotype(b))


def test_canonical_form_is_idempotent_and_parses_back():
    rng = random.Random(5)
    for _ in range(200):
        g = random_genotype(rng)
        form = canonical(g)
        assert canonical(form) == form
        assert parse_genotype(canonical_key(g)) == form
        assert len(fingerprint(g)) == 16


# ----------------------------------------------------------------------------------- breeding


def test_random_cells_are_valid_deterministic_and_rarely_none():
    cells = [random_genotype(random.Random(seed)) for seed in range(300)]
    assert all(problems(g) == [] for g in cells)
    assert cells[:20] == [random_genotype(random.Random(seed)) for seed in range(20)]
    assert all(g.normal[2 * k][1] != g.normal[2 * k + 1][1] for g in cells for k in range(4))
    share = sum(op == "none" for g in cells for op, _ in g.normal) / (8 * len(cells))
    expected = OP_WEIGHTS["none"] / sum(OP_WEIGHTS.values())
    assert abs(share - expected) < 0.02
    assert len({canonical_key(g) for g in cells}) > 290


def test_mutate_changes_exactly_one_edge_deterministically():
    rng = random.Random(1)
    for _ in range(300):
        parent = random_genotype(rng)
        seed = rng.randrange(10 ** 6)
        child = mutate(parent, random.Random(seed))
        assert len(changed_edges(parent, child)) == 1
        assert problems(child) == []
        assert child == mutate(parent, random.Random(seed))
        edge = changed_edges(parent, child)[0]
        old, new = parent.normal[edge], child.normal[edge]
        assert (old[0] == new[0]) != (old[1] == new[1])  # the operation or the input, not both
        if old[0] == "none":
            assert new[0] != "none"


def test_mutate_prefers_a_functionally_different_child():
    rng = random.Random(2)
    parents = [random_genotype(rng) for _ in range(200)]
    same = sum(fingerprint(mutate(p, rng)) == fingerprint(p) for p in parents)
    assert same == 0


def test_crossover_exchanges_node_specs():
    rng = random.Random(3)
    for _ in range(200):
        a, b = random_genotype(rng), random_genotype(rng)
        seed = rng.randrange(10 ** 6)
        c, d = crossover(a, b, random.Random(seed))
        assert (c, d) == crossover(a, b, random.Random(seed))
        exchanged = [k for k in range(4) if c.node(k) == b.node(k) and d.node(k) == a.node(k) and a.node(k) != b.node(k)]
        for k in range(4):
            assert (c.node(k), d.node(k)) in ((a.node(k), b.node(k)), (b.node(k), a.node(k)))
        if all(a.node(k) != b.node(k) for k in range(4)):
            assert 1 <= len(exchanged) <= 3  # a proper, non-empty subset


def test_initial_population_is_mutants_of_the_initial_cell():
    population = initial_population(INITIAL, 30, random.Random(4))
    assert population == initial_population(INITIAL, 30, random.Random(4))
    assert len(population) == 30 and all(problems(g) == [] for g in population)
    assert all(1 <= len(changed_edges(INITIAL, g)) <= 3 for g in population)
    assert len({canonical_key(g) for g in population}) == 30


# ----------------------------------------------------------------------------------- gates


def test_structure_gate_verdicts():
    gate = StructureGate()
    only_input_0 = cell([(SEP, 0), ("skip_connect", 0)], [(SEP, 2), (SEP, 0)], [(SEP, 3), ("none", 1)],
                        [("max_pool_3x3", 4), (SEP, 2)])
    all_none = cell(*[[("none", 0), ("none", 1)]] * 4)
    # input 1 reaches only a zero node through a pool: the output ignores it
    zero_path = cell([("none", 0), ("none", 1)], [("max_pool_3x3", 2), (SEP, 0)], [(SEP, 0), (SEP, 3)],
                     [("skip_connect", 2), ("avg_pool_3x3", 4)])
    bad_index = Genotype(normal=INITIAL.normal[:7] + (("dil_conv_3x3", 5),))
    ok, one, none, zero, bad = gate.evaluate([INITIAL, only_input_0, all_none, zero_path, bad_index])
    assert ok.passed and ok.metrics["fingerprint"] == fingerprint(INITIAL) and ok.metrics["inputs_used"] == [0, 1]
    assert not one.passed and "ignores input 1 (Block4" in one.reason
    assert not none.passed and "all edges are 'none'" in none.reason
    assert not zero.passed and "ignores input 1" in zero.reason and inputs_reaching_output(zero_path) == {0}
    assert not bad.passed and "node 3 (pair 7) reads input 5" in bad.reason
    all_zero = cell([("none", 0), ("none", 1)], *[[("skip_connect", 2), ("max_pool_3x3", 2)]] * 3)
    (verdict,) = gate.evaluate([all_zero])
    assert not verdict.passed and "every node is identically zero" in verdict.reason
    assert all("\n" not in v.reason for v in (ok, one, none, zero, bad, verdict))


def test_budget_gate_rejects_above_the_limit():
    params = count_parameters(INITIAL, 16)
    at_limit, below = BudgetGate(max_params=params, channels=16), BudgetGate(max_params=params - 1, channels=16)
    (passed,) = at_limit.evaluate([INITIAL])
    (rejected,) = below.evaluate([INITIAL])
    assert passed.passed and passed.metrics["params"] == params
    assert not rejected.passed and f"{params:,} parameters exceed the budget of {params - 1:,}" in rejected.reason
    (flops,) = BudgetGate(max_flops=1000, channels=16, height=8, width=8).evaluate([INITIAL])
    assert not flops.passed and "multiply-adds exceed" in flops.reason and flops.metrics["flops"] > 1000
    cheap = cell(*[[("skip_connect", 0), ("max_pool_3x3", 1)]] * 4)
    (free,) = BudgetGate(max_params=0, max_flops=0).evaluate([cheap])
    assert free.passed and free.metrics == {"params": 0, "flops": 0}


# ----------------------------------------------------------------------------------- representation


def test_representation_protocol():
    rep = CellRepresentation(CellSpace(channels=16, height=9, width=9))
    assert rep.kind == "cell"
    g = rep.parse(DARTS_V2_FULL)
    assert rep.parse(rep.key(g)) == g and rep.key(g) == DARTS_V2_FULL
    assert rep.fingerprint(g) == fingerprint(g)
    info = rep.describe(INITIAL)
    assert info["genotype"] == DARTS_V2_NORMAL
    assert info["summary"] == "5 sep_conv_3x3, 2 skip_connect, 1 dil_conv_3x3"
    assert info["params"] == str(count_parameters(INITIAL, 16))
    assert parse_genotype(info["canonical"]) == canonical(INITIAL)
    assert rep.initial() == parse_genotype(DARTS_V2_NORMAL)
    assert all(v.passed for gate in rep.gates() for v in gate.evaluate([rep.initial()]))
    structure, budget = rep.gates({"max_params": 10})
    assert structure.name == "structure" and budget.name == "budget" and budget.channels == 16
    assert not budget.evaluate([INITIAL])[0].passed
    with pytest.raises(UserError, match="unknown cell option"):
        rep.gates({"max_parms": 10})
    with pytest.raises(UserError, match="channels must be a positive integer"):
        CellSpace(channels=0)
    rng = random.Random(0)
    assert problems(rep.random(rng)) == [] and len(rep.initial_population(5, rng)) == 5
    assert len(changed_edges(INITIAL, rep.mutate(INITIAL, rng))) == 1
    a, b = rep.crossover(INITIAL, rep.random(rng), rng)
    assert problems(a) == problems(b) == []


def test_genotype_is_immutable_plain_data():
    g = parse_genotype(DARTS_V2_NORMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.normal = ()  # type: ignore[misc]
    assert isinstance(g.normal, tuple) and hash(g) == hash(parse_genotype(DARTS_V2_NORMAL))
    assert set(PRIMITIVES) >= {op for op, _ in g.normal}


def test_parsing_gates_and_breeding_do_not_import_torch():
    code = ("import sys, random; from autoloss.cell.representation import CellRepresentation as R; r = R(); "
            "[g.evaluate([r.mutate(r.initial(), random.Random(0))]) for g in r.gates()]; "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
