"""The loss-tree genotype: DEAP's strongly typed GP over a search space.

Every operator is registered once per shape combination it accepts (``Add[mc]`` adds a matrix and a
column), so DEAP only ever builds trees whose shapes fit and whose root is the per-sample loss the
space asks for. Individuals travel through the engine as :class:`Node` trees and their canonical
prefix strings; DEAP trees exist only inside variation. DEAP draws from the global ``random``
module, so every call runs inside :func:`using_rng`, which lends it the caller's generator and
takes the advanced state back: seeded runs are reproducible and interleaving runs do not collide.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import random
from collections import defaultdict
from functools import partial

from deap import gp

from autoloss.loss.expression import Node, parse, result_shape, to_infix, to_latex
from autoloss.loss.primitives import OPERATORS
from autoloss.loss.space import SearchSpace


class Matrix:
    """DEAP type tag: a B x C tensor."""


class Column:
    """DEAP type tag: a B x 1 tensor (or a broadcast scalar)."""


TYPES = {"matrix": Matrix, "column": Column}
SHAPES = {Matrix: "matrix", Column: "column"}


@contextlib.contextmanager
def using_rng(rng: random.Random):
    """Let DEAP (which uses the global ``random``) draw from ``rng`` for the duration."""
    saved = random.getstate()
    random.setstate(rng.getstate())
    try:
        yield
    finally:
        rng.setstate(random.getstate())
        random.setstate(saved)


def one_point_crossover(ind1: gp.PrimitiveTree, ind2: gp.PrimitiveTree):
    """DEAP's typed one-point crossover, with the shared types in a fixed order.

    ``gp.cxOnePoint`` draws from a set of type classes, whose order follows their memory addresses
    and so differs between processes: a resumed run would breed differently. Here it does not.
    """
    if len(ind1) < 2 or len(ind2) < 2:
        return ind1, ind2
    positions1, positions2 = defaultdict(list), defaultdict(list)
    for index, node in enumerate(ind1[1:], 1):
        positions1[node.ret].append(index)
    for index, node in enumerate(ind2[1:], 1):
        positions2[node.ret].append(index)
    common = sorted(set(positions1) & set(positions2), key=lambda t: t.__name__)
    if common:
        type_ = random.choice(common)
        slice1 = ind1.searchSubtree(random.choice(positions1[type_]))
        slice2 = ind2.searchSubtree(random.choice(positions2[type_]))
        ind1[slice1], ind2[slice2] = ind2[slice2], ind1[slice1]
    return ind1, ind2


class LossGenotype:
    """Creates, varies and converts loss trees of one search space (the engine's genotype plug-in)."""

    kind = "loss-tree"

    def __init__(self, space: SearchSpace, mutation_weights: dict[str, float] | None = None):
        self.space = space
        self.pset, self._variant, self._op_of = self._build_primitive_set(space)
        self.mutation_weights = mutation_weights or {"subtree": 0.3, "node": 0.3, "insert": 0.25, "shrink": 0.15}
        limit_h = gp.staticLimit(key=operator.attrgetter("height"), max_value=space.max_height)
        limit_s = gp.staticLimit(key=len, max_value=space.max_size)
        grow = partial(gp.genGrow, min_=0, max_=2)
        self._mutations = {
            "subtree": limit_s(limit_h(partial(gp.mutUniform, expr=grow, pset=self.pset))),
            "node": limit_s(limit_h(partial(gp.mutNodeReplacement, pset=self.pset))),
            "insert": limit_s(limit_h(partial(gp.mutInsert, pset=self.pset))),
            "shrink": limit_s(limit_h(gp.mutShrink)),
        }
        self._crossover = limit_s(limit_h(one_point_crossover))

    # -------------------------------------------------------------------- the primitive set

    @staticmethod
    def _build_primitive_set(space: SearchSpace):
        shapes = sorted({i.shape for i in space.inputs} | {"column"})
        pset = gp.PrimitiveSetTyped(space.name, [], TYPES[space.output])
        variant, op_of = {}, {}
        for name in space.operators:
            op = OPERATORS[name]
            for combo in itertools.product(shapes, repeat=op.arity):
                ret = result_shape(name, combo)
                if ret is None:
                    continue
                dname = name if len(shapes) == 1 else f"{name}[{''.join(s[0] for s in combo)}]"
                pset.addPrimitive(op.torch_fn, [TYPES[s] for s in combo], TYPES[ret], name=dname)
                variant[(name, combo)] = dname
                op_of[dname] = name
        for inp in space.inputs:
            pset.addTerminal(inp.name, TYPES[inp.shape], name=inp.name)
        for const in space.constants:
            pset.addTerminal(const, Column, name=str(const))
        return pset, variant, op_of

    # -------------------------------------------------------------------- conversions

    def parse(self, text: str) -> Node:
        """Parse any expression of the space; a tree over the size limits is read, never bred."""
        return parse(text, self.space)

    def to_deap(self, node: Node) -> gp.PrimitiveTree:
        items = []
        for n in node.walk():
            if n.kind == "op":
                dname = self._variant[(n.name, tuple(c.shape for c in n.children))]
                items.append(self.pset.mapping[dname])
            else:
                items.append(self.pset.mapping[n.name])
        return gp.PrimitiveTree(items)

    def from_deap(self, tree: gp.PrimitiveTree) -> Node:
        def build(index: int) -> tuple[Node, int]:
            item = tree[index]
            if isinstance(item, gp.Terminal):
                name = str(item.value)
                kind = "const" if name.isdigit() else "input"
                return Node(kind, name, SHAPES[item.ret]), index + 1
            children, nxt = [], index + 1
            for _ in range(item.arity):
                child, nxt = build(nxt)
                children.append(child)
            return Node("op", self._op_of[item.name], SHAPES[item.ret], tuple(children)), nxt

        node, end = build(0)
        assert end == len(tree)
        return node

    # -------------------------------------------------------------------- creation and variation

    def initial(self) -> Node:
        return self.parse(self.space.initial_expression)

    def random(self, rng: random.Random, min_height: int = 1, max_height: int = 4) -> Node:
        """A random tree (for the random-search baseline), within the space's limits."""
        with using_rng(rng):
            for _ in range(100):
                tree = gp.PrimitiveTree(gp.genHalfAndHalf(self.pset, min_height, max_height))
                if tree.height <= self.space.max_height and len(tree) <= self.space.max_size:
                    return self.from_deap(tree)
        raise RuntimeError("could not draw a tree within the size limits")

    def mutate(self, node: Node, rng: random.Random, attempts: int = 10) -> Node:
        """One mutation (subtree replacement, node replacement, insertion or shrink) that changes the tree."""
        names = list(self.mutation_weights)
        weights = [self.mutation_weights[n] for n in names]
        with using_rng(rng):
            for _ in range(attempts):
                kind = random.choices(names, weights)[0]
                (tree,) = self._mutations[kind](self.to_deap(node))
                child = self.from_deap(tree)
                if str(child) != str(node):
                    return child
        return node

    def crossover(self, a: Node, b: Node, rng: random.Random) -> tuple[Node, Node]:
        """One-point subtree crossover between same-shaped subtrees."""
        with using_rng(rng):
            t1, t2 = self._crossover(self.to_deap(a), self.to_deap(b))
        return self.from_deap(t1), self.from_deap(t2)

    def initial_population(self, size: int, rng: random.Random, max_mutations: int = 3) -> list[Node]:
        """N individuals evolved from L_I: each the initial loss after 1..max_mutations mutations."""
        start = self.initial()
        population = []
        for _ in range(size):
            node = start
            for _ in range(rng.randint(1, max_mutations)):
                node = self.mutate(node, rng)
            population.append(node)
        return population

    # -------------------------------------------------------------------- description

    def describe(self, node: Node) -> dict[str, str]:
        return {"expression": str(node), "infix": to_infix(node), "latex": to_latex(node)}

