"""Convergence property verification (CPV, paper section 3.2.2).

Classification, in the binary reduction (one positive and one negative score):
  - monotonicity: the loss decreases with the positive class score and increases with the negative one;
  - convergence: the gradient goes to 0 as the positive score goes to +infinity. As in the paper, whose
    binary loss has the positive score as its only variable, this is the derivative with respect to
    the positive score x_pos; in softmax mode the negative logit x_neg is held at 0 meanwhile (the
    sigmoid mode has one score per entry, so there the two readings agree).
    ``whole_gradient=True`` adds a condition of ours, an extension off by default: the derivatives
    with respect to both scores vanish along a converging path, x_neg = -x_pos -> -infinity (with
    x_neg pinned at 0, d loss / d x_neg may stay positive for a perfectly good loss such as
    cross-entropy on tanh-squashed logits). Every message names the score whose derivative fails.
Regression, distance-loss consistency: the loss grows as the predicted box moves away from the
ground truth (shifted, scaled, stretched, for small and large boxes) and is minimal at perfect overlap.

Two stages. A numeric screen evaluates the loss and its autograd derivative on dense grids in float64
(milliseconds) and returns pass, fail or ambiguous (a tiny violation, or a gradient that decays too
slowly to judge on a grid). Sympy then decides, in worker processes with a hard time limit because
``limit`` and ``is_decreasing`` can hang: what sympy proves or refutes is final; where it cannot
answer in time the numeric verdict stands, and the reason says so. ``symbolic`` chooses which
candidates reach sympy: ``"ambiguous"`` (the default: only where the grid cannot decide),
``"always"`` (every candidate the grid passes too) or ``"never"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import sympy
import torch
from sympy.solvers.inequalities import solve_poly_inequality

from autoloss.engine.protocols import Verdict
from autoloss.loss.compile import compile_loss
from autoloss.loss.expression import Node, parse
from autoloss.loss.space import SearchSpace
from autoloss.loss.symbolic import to_sympy
from autoloss.timelimit import TimeLimitedPool

# ----------------------------------------------------------------------------------- numeric

POSITIVE_GRID = np.concatenate([np.linspace(-15.0, 15.0, 121), [20.0, 25.0, 30.0, 40.0, 50.0]])
NEGATIVE_GRID = np.concatenate([[-50.0, -40.0, -30.0, -20.0], np.linspace(-15.0, 15.0, 121)])
CONVERGENCE_POINTS = np.array([10.0, 20.0, 30.0, 40.0, 50.0])  # below the protected exp's clamp
# The binary reduction is that of the paper's BCE: a positive with target 1, i.e. a perfectly localised
# positive (IoU 1). With IoU < 1 an IoU-aware loss may rightly prefer a score matching the IoU (the
# quality-focal behaviour of CSE-Autoloss-B_cls) and is then not monotonic in the positive score.
IOU_VALUES = (1.0,)
SYMBOLIC_IOU = sympy.Integer(1)
TOLERANCE = 1e-9  # derivatives within this of zero count as flat
AMBIGUOUS = 1e-6  # violations smaller than this are left to sympy


@dataclass(frozen=True)
class Finding:
    status: str  # "pass" | "fail" | "ambiguous"
    reason: str


def _reduction_inputs(space: SearchSpace, scores: np.ndarray, positive: bool, iou: float,
                      converging: bool = False):
    """Batched inputs of the binary reduction: one row per score value, requires_grad on the logits.
    ``converging`` (softmax mode, positive): the negative logit is -score instead of 0."""
    n = len(scores)
    x = torch.zeros(n, 2 if space.mode == "softmax" else 1, dtype=torch.float64)
    column = 0 if positive else (1 if space.mode == "softmax" else 0)
    x[:, column] = torch.as_tensor(scores)
    if converging and space.mode == "softmax":
        x[:, 1] = -torch.as_tensor(scores)
    x.requires_grad_(True)
    by_role = {"logits": x}
    if space.mode == "softmax":  # two classes: the ground truth is class 0, the other is the negative
        by_role["target"] = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(n, 2)
        by_role["iou"] = torch.full((n, 1), iou, dtype=torch.float64)
    else:  # independent sigmoid: a positive entry (y=1, IoU w) or a negative one (y=0, IoU 0)
        by_role["target"] = torch.full((n, 1), 1.0 if positive else 0.0, dtype=torch.float64)
        by_role["iou"] = torch.full((n, 1), iou if positive else 0.0, dtype=torch.float64)
    return {i.name: by_role[i.role] for i in space.inputs}, x, column


def _loss_and_grad(space, loss, scores, positive, iou, converging: bool = False):
    """Values, the derivative in the varied score, and the whole gradient (rows x logits)."""
    inputs, x, column = _reduction_inputs(space, scores, positive, iou, converging)
    values = loss(**inputs).sum(dim=-1)
    (grad,) = torch.autograd.grad(values.sum(), [x])
    return values.detach().numpy(), grad[:, column].numpy(), grad.numpy()


def _vanishes(grad: np.ndarray, what: str, where: str, iou: float) -> Finding | None:
    """Does |grad| at CONVERGENCE_POINTS decay to 0? A failing or ambiguous finding naming ``what``
    (the score the derivative is taken in), None when it clearly vanishes."""
    magnitude = np.abs(grad)
    if not np.isfinite(magnitude).all():
        return Finding("fail", f"gradient w.r.t. the {what} score not finite for large positive scores "
                               f"({where}, w={iou})")
    far, mid = magnitude[-1], magnitude[1]
    at = f"x_pos=+{CONVERGENCE_POINTS[-1]:g}"
    if far > 1e-3 and far >= 0.5 * mid:
        return Finding("fail", f"gradient does not vanish w.r.t. the {what} score as the positive score grows "
                               f"(|d loss / d x_{what[:3]}| = {far:.3g} at {at}, {where}, w={iou})")
    if far > 1e-8:
        return Finding("ambiguous", f"gradient w.r.t. the {what} score decays slowly "
                                    f"(|d loss / d x_{what[:3]}| = {far:.2e} at {at}, {where}, w={iou})")
    return None


def _monotone(values, slope, grid, sign: int, what: str, iou: float) -> Finding | None:
    """sign -1: must decrease, +1: must increase. None when fine."""
    if not (np.isfinite(values).all() and np.isfinite(slope).all()):
        return Finding("fail", f"not finite on the binary reduction ({what} score, w={iou})")
    wrong = sign * slope < -TOLERANCE
    if wrong.any():
        worst = int(np.argmax(-sign * slope))
        magnitude = float(abs(slope[worst]))
        direction = "increases" if sign < 0 else "decreases"
        return Finding("fail" if magnitude > AMBIGUOUS else "ambiguous",
                       f"{direction} with the {what} score near {grid[worst]:+.3g} (w={iou}, slope {slope[worst]:+.2e})")
    if sign * (values[-1] - values[0]) <= TOLERANCE:
        return Finding("fail", f"does not depend on the {what} score (w={iou})")
    return None


def numeric_classification(space: SearchSpace, node: Node, whole_gradient: bool = False) -> Finding:
    loss = compile_loss(node, space.output)
    softmax = space.mode == "softmax"
    ambiguous: list[str] = []
    for iou in IOU_VALUES:
        values, slope, _ = _loss_and_grad(space, loss, POSITIVE_GRID, True, iou)
        found = _monotone(values, slope, POSITIVE_GRID, -1, "positive", iou)
        if found is None:
            values, slope, _ = _loss_and_grad(space, loss, NEGATIVE_GRID, False, iou)
            found = _monotone(values, slope, NEGATIVE_GRID, +1, "negative", iou)
        if found is not None and found.status == "fail":
            return found
        if found is not None:
            ambiguous.append(found.reason)
        # the paper's condition: d loss / d x_pos -> 0 (softmax: x_neg held at 0)
        _, slope, _ = _loss_and_grad(space, loss, CONVERGENCE_POINTS, True, iou)
        checks = [(slope, "positive", "x_neg=0" if softmax else "target 1")]
        if whole_gradient and softmax:  # the extension: both derivatives along x_neg = -x_pos
            _, _, grad = _loss_and_grad(space, loss, CONVERGENCE_POINTS, True, iou, converging=True)
            checks += [(grad[:, 0], "positive", "x_neg=-x_pos"), (grad[:, 1], "negative", "x_neg=-x_pos")]
        for derivative, what, where in checks:
            found = _vanishes(derivative, what, where, iou)
            if found is not None and found.status == "fail":
                return found
            if found is not None:
                ambiguous.append(found.reason)
    if ambiguous:
        return Finding("ambiguous", "; ".join(dict.fromkeys(ambiguous)))
    vanishing = ("d loss / d x_pos -> 0 and d loss / d x_neg -> 0 along x_neg = -x_pos" if whole_gradient and softmax
                 else "d loss / d x_pos -> 0")
    return Finding("pass", f"decreasing in the positive score, increasing in the negative score, "
                           f"{vanishing} (grid check, w in {list(IOU_VALUES)})")


# Regression paths: the prediction moves away from a ground-truth box of side s along a path with
# parameter t >= 0 (t = 0 is perfect overlap). Each path gives (i, u, e) as functions of t, usable
# by numpy and by sympy alike; pieces split where the formula changes.
BOX_SIDES = (4.0, 32.0, 256.0)


def _paths(s):
    """name -> list of (t_start, t_end, fn(t) -> (i, u, e)) pieces, for a square box of side s."""
    a = s * s
    return {
        "shift along x": [
            (0.0, 1.0, lambda t: (a * (1 - t), a * (1 + t), a * (1 + t))),
            (1.0, 3.0, lambda t: (0 * t, 2 * a + 0 * t, a * (1 + t))),
        ],
        "shift diagonally": [
            (0.0, 1.0, lambda t: (a * (1 - t) ** 2, 2 * a - a * (1 - t) ** 2, a * (1 + t) ** 2)),
            (1.0, 3.0, lambda t: (0 * t, 2 * a + 0 * t, a * (1 + t) ** 2)),
        ],
        "grow around it": [(0.0, 2.0, lambda t: (a + 0 * t, a * (1 + t) ** 2, a * (1 + t) ** 2))],
        "shrink inside it": [(0.0, 0.9, lambda t: (a * (1 - t) ** 2, a + 0 * t, a + 0 * t))],
        "stretch": [(0.0, 2.0, lambda t: (a / (1 + t), a * (1 + t), a * (1 + t)))],
    }


def _regression_inputs(space: SearchSpace, i, u, e) -> dict[str, torch.Tensor]:
    by_role = {"intersection": i, "union": u, "enclosing": e}
    return {inp.name: by_role[inp.role] for inp in space.inputs}


def numeric_regression(space: SearchSpace, node: Node) -> Finding:
    loss = compile_loss(node, space.output)
    ambiguous = []
    for side in BOX_SIDES:
        for path, pieces in _paths(side).items():
            ts = np.concatenate([np.linspace(lo, hi, 40, endpoint=k == len(pieces) - 1)
                                 for k, (lo, hi, _) in enumerate(pieces)])
            iue = np.concatenate([np.stack(fn(np.linspace(lo, hi, 40, endpoint=k == len(pieces) - 1)), axis=1)
                                  for k, (lo, hi, fn) in enumerate(pieces)])
            t = torch.as_tensor(iue, dtype=torch.float64)
            values = loss(**_regression_inputs(space, t[:, 0], t[:, 1], t[:, 2])).detach().numpy().ravel()
            if not np.isfinite(values).all():
                return Finding("fail", f"not finite along '{path}' ({side:g} px box)")
            steps = np.diff(values)
            scale = max(1.0, float(np.abs(values).max()))
            if (steps < -TOLERANCE * scale).any():
                k = int(np.argmin(steps))
                drop = float(-steps[k])
                status = "fail" if drop > AMBIGUOUS * scale else "ambiguous"
                return_or_note = Finding(status, f"the loss shrinks as the prediction moves away from the "
                                                 f"ground truth ('{path}', {side:g} px box, t={ts[k]:.2f})")
                if status == "fail":
                    return return_or_note
                ambiguous.append(return_or_note.reason)
            if values[-1] - values[0] <= TOLERANCE * scale:
                return Finding("fail", f"the loss does not grow with the distance ('{path}', {side:g} px box)")
    if ambiguous:
        return Finding("ambiguous", "; ".join(ambiguous))
    return Finding("pass", "grows with the distance along every path, minimal at perfect overlap (grid check)")


# ----------------------------------------------------------------------------------- symbolic


def _limit_at_infinity(expr: sympy.Expr, x: sympy.Symbol) -> sympy.Expr | None:
    """sympy's limit of ``expr`` as x -> +oo, or None where it is no definite value: an unevaluated
    ``Limit``, NaN, or one still holding sympy's own substitution variables (its Gruntz algorithm
    gave up half way), which proves nothing either way."""
    value = sympy.limit(expr, x, sympy.oo)
    if value is sympy.nan or value.has(sympy.Limit) or value.free_symbols:
        return None
    return value


def _symbolic_classification(space: SearchSpace, node: Node, whole_gradient: bool = False) -> Finding:
    x, n = sympy.Symbol("x", real=True), sympy.Symbol("n", real=True)
    iou = SYMBOLIC_IOU
    softmax = space.mode == "softmax"
    if softmax:
        env = lambda p, q: {"logits": [p, q], "target": [1, 0], "iou": iou}  # noqa: E731
        pos_env, neg_env, both_env = env(x, 0), env(0, x), env(x, n)
    else:
        pos_env = {"logits": x, "target": 1, "iou": iou}
        neg_env = {"logits": x, "target": 0, "iou": 0}
        both_env = None
    def expr(by_role):
        return to_sympy(node, {i.name: by_role[i.role] for i in space.inputs})

    positive, negative = expr(pos_env), expr(neg_env)
    # the paper's condition: d loss / d x_pos -> 0 as x_pos -> +oo (softmax: x_neg = 0)
    held = "x_neg = 0, " if softmax else ""
    limit = _limit_at_infinity(sympy.diff(positive, x), x)
    if limit is None:
        return Finding("ambiguous", f"sympy could not take the limit of d loss / d x_pos as x_pos -> +oo "
                                    f"({held}w={iou})")
    if limit != 0:
        return Finding("fail", f"sympy: d loss / d x_pos does not tend to 0 as the positive score x_pos -> +oo "
                               f"({held}w={iou}, limit {limit})")
    if whole_gradient and both_env is not None:  # the extension: both derivatives along x_neg = -x_pos
        both = expr(both_env)
        for what, symbol in (("pos", x), ("neg", n)):
            along = _limit_at_infinity(sympy.diff(both, symbol).subs(n, -x), x)
            if along is None:
                return Finding("ambiguous", f"sympy could not take the limit of d loss / d x_{what} along "
                                            f"x_neg = -x_pos -> -oo (w={iou})")
            if along != 0:
                return Finding("fail", f"sympy: d loss / d x_{what} does not tend to 0 along x_neg = -x_pos, "
                                       f"x_pos -> +oo (w={iou}, limit {along})")
    reals = sympy.Interval(-sympy.oo, sympy.oo)
    decreasing = sympy.is_strictly_decreasing(positive, reals, x)
    if decreasing is False:
        return Finding("fail", f"sympy: not strictly decreasing in the positive score (w={iou})")
    increasing = sympy.is_strictly_increasing(negative, reals, x)
    if increasing is False:
        return Finding("fail", f"sympy: not strictly increasing in the negative score (w={iou})")
    if decreasing and increasing:
        vanishing = "d loss / d x_pos -> 0 as x_pos -> +oo" + (" with x_neg = 0" if softmax else "")
        if whole_gradient and softmax:
            vanishing += ", and both derivatives -> 0 along x_neg = -x_pos"
        return Finding("pass", f"sympy: strictly decreasing in the positive score, strictly increasing in the "
                               f"negative score, {vanishing} (w={iou})")
    return Finding("ambiguous", "sympy proved convergence but could not decide monotonicity")


def _nondecreasing(expr: sympy.Expr, t: sympy.Symbol, lo, hi) -> bool | None:
    """Is expr non-decreasing in t on [lo, hi]? Exact for rational functions (the sign of the
    derivative's numerator times denominator, by real-root isolation); sympy's is_increasing otherwise."""
    slope = sympy.together(sympy.diff(expr, t))
    num, den = sympy.fraction(slope)
    if num.is_polynomial(t) and den.is_polynomial(t):
        negative = solve_poly_inequality(sympy.Poly(sympy.expand(num * den), t), "<")
        return sympy.Union(*negative).intersect(sympy.Interval.open(lo, hi)) is sympy.S.EmptySet
    return sympy.is_increasing(expr, sympy.Interval(lo, hi), t)


def _symbolic_regression(space: SearchSpace, node: Node) -> Finding:
    t = sympy.Symbol("t", nonnegative=True)
    undecided = []
    for side in (4, 256):
        for path, pieces in _paths(sympy.Integer(side)).items():
            start = end = None
            for lo, hi, fn in pieces:
                i, u, e = (sympy.sympify(v) for v in fn(t))
                loss = to_sympy(node, {inp.name: {"intersection": i, "union": u, "enclosing": e}[inp.role]
                                       for inp in space.inputs})
                lo, hi = sympy.nsimplify(lo), sympy.nsimplify(hi)
                verdict = _nondecreasing(loss, t, lo, hi)
                if verdict is False:
                    return Finding("fail", f"sympy: the loss decreases somewhere along '{path}' "
                                           f"({side} px box, t in [{lo}, {hi}])")
                if verdict is None:
                    undecided.append(f"'{path}' ({side} px)")
                start = loss.subs(t, lo) if start is None else start
                end = loss.subs(t, hi)
            if not bool(sympy.simplify(end - start) > 0):
                return Finding("fail", f"sympy: the loss does not grow along '{path}' ({side} px box)")
    if undecided:
        return Finding("ambiguous", "sympy could not decide " + ", ".join(undecided))
    return Finding("pass", "sympy: non-decreasing along every path, larger far away than at perfect overlap")


def symbolic_check(space: SearchSpace, expression: str, whole_gradient: bool = False) -> Finding:
    """The sympy verdict (runs in a worker process: may be slow, may hang, is killed on timeout)."""
    node = parse(expression, space)
    if space.mode == "regression":
        return _symbolic_regression(space, node)
    return _symbolic_classification(space, node, whole_gradient)


def _symbolic_task(args) -> tuple[str, str]:
    finding = symbolic_check(*args)
    return finding.status, finding.reason


def numeric_check(space: SearchSpace, node: Node, whole_gradient: bool = False) -> Finding:
    try:
        if space.mode == "regression":
            return numeric_regression(space, node)
        return numeric_classification(space, node, whole_gradient)
    except Exception as exc:  # a candidate that raises is rejected, never a crash
        return Finding("fail", f"raised {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------------- the gate


class ConvergenceGate:
    """CPV as a gate: numeric screen, then sympy (with a hard time limit) where asked.

    ``whole_gradient`` (off by default, an extension of the paper's condition; see the module
    docstring): in softmax mode also require d loss / d x_neg -> 0, along x_neg = -x_pos."""

    name = "convergence"

    def __init__(self, space: SearchSpace, symbolic: str = "ambiguous", timeout: float = 5.0,
                 workers: int = 2, pool: TimeLimitedPool | None = None, whole_gradient: bool = False):
        if symbolic not in ("ambiguous", "always", "never"):
            raise ValueError("symbolic must be 'ambiguous', 'always' or 'never'")
        self.space, self.symbolic, self.timeout = space, symbolic, timeout
        self.whole_gradient = whole_gradient
        self._pool = pool
        self._workers = workers
        self._symbolic_cache: dict[str, tuple[str, str]] = {}
        self.stats = {"numeric": 0, "symbolic": 0, "symbolic_timeouts": 0}

    @property
    def pool(self) -> TimeLimitedPool:
        if self._pool is None:
            self._pool = TimeLimitedPool(workers=self._workers)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def _needs_symbolic(self, finding: Finding) -> bool:
        if finding.status == "fail" or self.symbolic == "never":
            return False
        return self.symbolic == "always" or finding.status == "ambiguous"

    def evaluate(self, candidates: Sequence[Node]) -> list[Verdict]:
        numeric = [numeric_check(self.space, node, self.whole_gradient) for node in candidates]
        self.stats["numeric"] += len(candidates)
        todo = sorted({str(node) for node, f in zip(candidates, numeric)
                       if self._needs_symbolic(f) and str(node) not in self._symbolic_cache})
        if todo:
            outcomes = self.pool.map(_symbolic_task, [(self.space, e, self.whole_gradient) for e in todo],
                                     timeout=self.timeout)
            self.stats["symbolic"] += len(todo)
            for expression, outcome in zip(todo, outcomes):
                if outcome.ok:
                    self._symbolic_cache[expression] = outcome.value
                else:
                    self.stats["symbolic_timeouts"] += outcome.status == "timeout"
                    self._symbolic_cache[expression] = ("undecided", f"sympy undecided ({outcome.error})")
        return [self._combine(node, finding) for node, finding in zip(candidates, numeric)]

    def _combine(self, node: Node, finding: Finding) -> Verdict:
        if not self._needs_symbolic(finding):
            if finding.status == "ambiguous":
                return Verdict(self.name, True, f"kept, numeric check inconclusive: {finding.reason}",
                               {"decided_by": "numeric"})
            return Verdict(self.name, finding.status == "pass", finding.reason, {"decided_by": "numeric"})
        status, reason = self._symbolic_cache[str(node)]
        if status in ("pass", "fail"):
            return Verdict(self.name, status == "pass", reason, {"decided_by": "sympy"})
        # sympy could not decide (timeout or None): the numeric verdict stands
        note = f"{finding.reason} [{reason}]"
        if finding.status == "ambiguous":
            note = f"kept, neither the grid nor sympy could decide: {note}"
        return Verdict(self.name, True, note, {"decided_by": "numeric"})


def check_one(space: SearchSpace, node: Node, symbolic: str = "always", timeout: float = 20.0,
              whole_gradient: bool = False) -> Verdict:
    """CPV for a single tree (the CLI's ``check``); sympy by default."""
    gate = ConvergenceGate(space, symbolic=symbolic, timeout=timeout, workers=1, whole_gradient=whole_gradient)
    try:
        return gate.evaluate([node])[0]
    finally:
        gate.close()

