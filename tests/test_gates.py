"""The cheap gates: validity (finite on edge values) and convergence properties (numeric grid + sympy)."""

from __future__ import annotations

import pytest

from autoloss.engine.protocols import Verdict
from autoloss.loss.gates.convergence import ConvergenceGate, check_one, numeric_check, symbolic_check
from autoloss.loss.gates.validity import ValidityGate
from autoloss.loss.expression import Node, parse


def convergence(space, text, symbolic="ambiguous", timeout=5.0):
    gate = ConvergenceGate(space, symbolic=symbolic, timeout=timeout, workers=1)
    try:
        (verdict,) = gate.evaluate([parse(text, space)])
    finally:
        gate.close()
    return verdict, gate.stats


# ------------------------------------------------------------------------------ validity


@pytest.mark.parametrize("space_name", ["cls_softmax", "cls_sigmoid", "reg"])
def test_ready_losses_are_valid(spaces, space_name):
    """Every ready loss is finite, with finite gradients, on the probe batch (edge values included)."""
    space = spaces[space_name]
    gate = ValidityGate(space)
    for name, text in space.losses.items():
        verdict = gate.check(parse(text, space))
        assert verdict.passed, (name, verdict.reason)
        assert verdict.gate == "validity"


def test_sqrt_of_logits_is_rejected_with_nan(softmax):
    """Neg(Dot(Y,Sqrt(X))) gives NaN on negative logits: rejected, the reason says NaN loss and shows a row."""
    verdict = ValidityGate(softmax).check(parse("Neg(Dot(Y,Sqrt(X)))", softmax))
    assert not verdict.passed
    assert verdict.reason.startswith("NaN loss on")
    assert "X=" in verdict.reason and "Y=" in verdict.reason


def test_infinite_gradient_is_rejected(softmax):
    """sqrt(|x|) is finite but its gradient at x=0 is not (all-zero probe rows): rejected naming X."""
    verdict = ValidityGate(softmax).check(parse("Neg(Dot(Y,Sqrt(Abs(X))))", softmax))
    assert not verdict.passed
    assert "gradient w.r.t. X" in verdict.reason


def test_nan_regression_loss_is_rejected(reg):
    """sqrt(i - u) is NaN wherever the boxes do not coincide."""
    verdict = ValidityGate(reg).check(parse("Sqrt(Sub(I,U))", reg))
    assert not verdict.passed and "NaN loss" in verdict.reason


def test_validity_probes_in_float32_the_training_dtype(softmax, sigmoid):
    """exp(x)^2 at a logit of 50 is 2.7e43: finite in float64, +inf in float32, where training runs."""
    verdict = ValidityGate(sigmoid).check(parse("Mul(Exp(X),Exp(X))", sigmoid))
    assert not verdict.passed and "+inf loss" in verdict.reason and "X=[50." in verdict.reason
    assert not ValidityGate(softmax).check(parse("Neg(Dot(Y,Mul(Exp(X),Exp(X))))", softmax)).passed
    assert ValidityGate(sigmoid).check(parse("Mul(Exp(X),Y)", sigmoid)).passed  # exp(50) = 5e21 is fine


@pytest.mark.parametrize("space_name, text", [
    ("cls_softmax", "Neg(Dot(Y,Log(Sub(Mul(2,Softmax(X)),1))))"),  # -log(2p - 1): negative for p < 1/2
    ("cls_sigmoid", "Neg(Add(Mul(Y,Log(Tanh(X))),Mul(Sub(1,Y),Log(Sub(1,Sig(X))))))"),  # log tanh(x), x < 0
])
def test_a_log_of_a_partly_negative_argument_is_rejected(spaces, space_name, text):
    """The protected log is the authors' log(x + 1e-20): NaN where its argument is negative, so the
    validity gate rejects it (a clamp made that region a finite constant with zero gradient, which
    passed both gates); the convergence grid finds it not finite too."""
    space = spaces[space_name]
    node = parse(text, space)
    verdict = ValidityGate(space).check(node)
    assert not verdict.passed and "NaN" in verdict.reason
    assert numeric_check(space, node).status == "fail"


def test_validity_gate_evaluates_a_batch(softmax):
    """evaluate() returns one verdict per candidate, in order."""
    verdicts = ValidityGate(softmax).evaluate([parse("CE", softmax), parse("Neg(Dot(Y,Sqrt(X)))", softmax)])
    assert [v.passed for v in verdicts] == [True, False]


# ------------------------------------------------------------------------------ convergence: numeric


@pytest.mark.parametrize("space_name", ["cls_softmax", "cls_sigmoid", "reg"])
def test_ready_losses_pass_convergence(spaces, space_name):
    """Every ready loss passes the convergence gate (grid, sympy only where the grid is unsure)."""
    space = spaces[space_name]
    gate = ConvergenceGate(space, symbolic="ambiguous", timeout=5, workers=1)
    try:
        verdicts = gate.evaluate([parse(text, space) for text in space.losses.values()])
    finally:
        gate.close()
    for name, verdict in zip(space.losses, verdicts):
        assert verdict.passed, (name, verdict.reason)


@pytest.mark.parametrize("space_name, text, reason", [
    # log-softmax without the negation rewards a low positive score
    ("cls_softmax", "Dot(Y,Log(Softmax(X)))", "increases with the positive score"),
    # monotone (x_neg - x_pos) but the gradient never vanishes
    ("cls_softmax", "Add(Dot(Sub(1,Y),X),Neg(Dot(Y,X)))", "gradient does not vanish"),
    ("cls_sigmoid", "Add(Mul(Sub(1,Y),X),Neg(Mul(Y,X)))", "gradient does not vanish"),
    # ignores the negative score: cannot increase with it
    ("cls_softmax", "Neg(Dot(Y,Log(Sig(X))))", "does not depend on the negative score"),
    # IoU itself: larger is better, so it shrinks with distance
    ("reg", "Div(I,U)", "shrinks as the prediction moves away"),
    # e/e is constant: does not grow with distance
    ("reg", "Div(E,E)", "does not grow with the distance"),
    ("cls_softmax", "Neg(Dot(Y,Sqrt(X)))", "not finite"),
])
def test_convergence_rejects_with_the_right_reason(spaces, space_name, text, reason):
    """Losses breaking monotonicity, vanishing gradient or distance consistency are rejected, saying which."""
    verdict, _ = convergence(spaces[space_name], text)
    assert not verdict.passed
    assert reason in verdict.reason
    assert verdict.metrics["decided_by"] == "numeric"


def test_numeric_check_never_raises(softmax):
    """A candidate whose evaluation raises is a failing finding, not a crash."""
    broken = Node("op", "Nope", "column", (Node("input", "X", "matrix"),))
    finding = numeric_check(softmax, broken)
    assert finding.status == "fail" and finding.reason.startswith("raised KeyError")
    assert numeric_check(softmax, parse("CE", softmax)).status == "pass"


def test_invalid_symbolic_mode_is_refused(softmax):
    """symbolic must be one of always / ambiguous / never."""
    with pytest.raises(ValueError):
        ConvergenceGate(softmax, symbolic="sometimes")


# ------------------------------------------------------------------------------ convergence: sympy


def test_symbolic_check_proves_ce(softmax):
    """sympy proves CE: decreasing in the positive score, increasing in the negative, gradient -> 0."""
    finding = symbolic_check(softmax, "Neg(Dot(Y,Log(Softmax(X))))")
    assert finding.status == "pass"
    assert finding.reason.startswith("sympy:")


def test_symbolic_check_refutes_log_softmax_without_negation(softmax):
    """sympy refutes Dot(Y,Log(Softmax(X))): not decreasing in the positive score."""
    finding = symbolic_check(softmax, "Dot(Y,Log(Softmax(X)))")
    assert finding.status == "fail"
    assert "not strictly decreasing in the positive score" in finding.reason


@pytest.mark.parametrize("space_name, text, reason", [
    ("cls_softmax", "Add(Dot(Sub(1,Y),X),Neg(Dot(Y,X)))", "does not tend to 0"),
    ("reg", "Div(I,U)", "decreases somewhere"),
])
def test_symbolic_check_refutes_other_failures(spaces, space_name, text, reason):
    """sympy also refutes a non-vanishing gradient and a loss that shrinks with distance."""
    finding = symbolic_check(spaces[space_name], text)
    assert finding.status == "fail" and reason in finding.reason


def test_symbolic_check_proves_iou(reg):
    """sympy proves 1 - IoU non-decreasing along every path."""
    assert symbolic_check(reg, "IoU").status == "pass"


def test_gate_always_symbolic_decides_ce_by_sympy(softmax):
    """ConvergenceGate(symbolic='always') runs sympy in a worker and reports decided_by == 'sympy'."""
    verdict, stats = convergence(softmax, "CE", symbolic="always", timeout=20)
    assert verdict.passed
    assert verdict.metrics["decided_by"] == "sympy"
    assert verdict.reason.startswith("sympy:")
    assert stats == {"numeric": 1, "symbolic": 1, "symbolic_timeouts": 0}


def test_gate_never_symbolic_decides_by_grid(softmax):
    """symbolic='never' keeps the grid verdict and starts no sympy work."""
    verdict, stats = convergence(softmax, "CE", symbolic="never")
    assert verdict.passed and verdict.metrics["decided_by"] == "numeric"
    assert stats["symbolic"] == 0


def test_sympy_timeout_keeps_the_numeric_verdict(sigmoid):
    """When sympy overruns its time limit the grid verdict stands and the reason says sympy was undecided."""
    verdict, stats = convergence(sigmoid, "CSE-Autoloss-B_cls", symbolic="always", timeout=0.5)
    assert verdict.passed
    assert verdict.metrics["decided_by"] == "numeric"
    assert "sympy undecided" in verdict.reason
    assert stats["symbolic_timeouts"] == 1


def test_check_one_uses_sympy_by_default(reg):
    """check_one (the CLI's path) asks sympy by default."""
    verdict = check_one(reg, parse("GIoU", reg), timeout=20)
    assert verdict.passed and verdict.metrics["decided_by"] == "sympy"


def test_sympy_verdicts_are_cached_per_gate(softmax):
    """A gate asks sympy once per expression, however often the expression comes back."""
    gate = ConvergenceGate(softmax, symbolic="always", timeout=20, workers=1)
    try:
        node = parse("CE", softmax)
        first = gate.evaluate([node, node])
        second = gate.evaluate([node])
    finally:
        gate.close()
    assert [v.passed for v in first + second] == [True, True, True]
    assert gate.stats["symbolic"] == 1 and gate.stats["numeric"] == 3


def test_verdict_prints_gate_outcome_and_reason():
    """A verdict prints as 'gate: pass|REJECT - reason'."""
    assert str(Verdict("validity", False, "NaN loss")) == "validity: REJECT - NaN loss"
    assert str(Verdict("convergence", True, "ok")) == "convergence: pass - ok"


def test_a_limit_sympy_leaves_half_taken_proves_nothing(sigmoid):
    """The authors' B_cls: sympy's limit of its gradient keeps Gruntz's own variable (no definite value),
    which is no proof that the gradient stays away from 0; the grid's pass stands."""
    import sympy

    from autoloss.loss.gates.convergence import _limit_at_infinity

    x = sympy.Symbol("x", real=True)
    assert _limit_at_infinity(sympy.exp(-x) * x, x) == 0
    assert _limit_at_infinity(1 + sympy.exp(-x), x) == 1
    verdict, _ = convergence(sigmoid, "CSE-Autoloss-B_cls", symbolic="always", timeout=120)
    assert verdict.passed, verdict.reason
    assert "sympy could not take the limit" in verdict.reason or "sympy undecided" in verdict.reason


# ------------------------------------------------------------------------------ convergence: the paper's condition


TANH_CEI = "Neg(Dot(Mul(Y,W),Log(Softmax(Tanh(X)))))"
CE_PLUS_NEGATIVE = "Add(Neg(Dot(Y,Log(Softmax(X)))),Dot(Sub(1,Y),X))"  # CE + x_neg: d/dx_neg -> 1


@pytest.mark.parametrize("symbolic", ["never", "always"])
@pytest.mark.parametrize("text", [TANH_CEI, "Neg(Dot(Y,Log(Softmax(Tanh(X)))))"])
def test_softmax_convergence_is_the_papers_derivative_in_the_positive_score(softmax, text, symbolic):
    """Section 3.2.2 asks d loss / d x_pos -> 0 as x_pos -> +oo. Cross-entropy on tanh-squashed logits
    meets it (4e-44 at x_pos = 50); its d loss / d x_neg at x_neg = 0 stays 1 / (1 + e), which the gate
    must not hold against it, by grid or by sympy."""
    verdict, _ = convergence(softmax, text, symbolic=symbolic, timeout=20)
    assert verdict.passed, verdict.reason
    assert "d loss / d x_pos -> 0" in verdict.reason
    assert numeric_check(softmax, parse(text, softmax)).status == "pass"


def test_whole_gradient_is_an_extension_along_a_converging_path_naming_the_score(softmax):
    """whole_gradient=True (off by default) also asks d loss / d x_neg -> 0, along x_neg = -x_pos: the
    tanh variant passes it, CE + x_neg passes the paper's condition but not the extension, and the
    reason names the negative score, by grid and by sympy."""
    assert numeric_check(softmax, parse(CE_PLUS_NEGATIVE, softmax)).status == "pass"
    assert numeric_check(softmax, parse(TANH_CEI, softmax), whole_gradient=True).status == "pass"
    found = numeric_check(softmax, parse(CE_PLUS_NEGATIVE, softmax), whole_gradient=True)
    assert found.status == "fail" and "w.r.t. the negative score" in found.reason and "x_neg=-x_pos" in found.reason
    assert symbolic_check(softmax, TANH_CEI, whole_gradient=True).status == "pass"
    by_sympy = symbolic_check(softmax, CE_PLUS_NEGATIVE, whole_gradient=True)
    assert by_sympy.status == "fail" and "d loss / d x_neg does not tend to 0" in by_sympy.reason
    gate = ConvergenceGate(softmax, symbolic="never", workers=1, whole_gradient=True)
    assert not gate.evaluate([parse(CE_PLUS_NEGATIVE, softmax)])[0].passed


def test_a_non_vanishing_positive_derivative_names_the_positive_score(spaces):
    """x_neg - x_pos (softmax) and its sigmoid twin: the message says which derivative stays."""
    for name, text in (("cls_softmax", "Add(Dot(Sub(1,Y),X),Neg(Dot(Y,X)))"),
                       ("cls_sigmoid", "Add(Mul(Sub(1,Y),X),Neg(Mul(Y,X)))")):
        verdict, _ = convergence(spaces[name], text)
        assert not verdict.passed and "w.r.t. the positive score" in verdict.reason
        assert "d loss / d x_pos" in symbolic_check(spaces[name], text).reason
