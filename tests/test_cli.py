"""The ``autoloss check`` command: formula, verdicts and exit codes 0 / 1 / 2, errors without tracebacks."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from autoloss.cli import build_parser, main
from cli_helpers import assert_clean_error, autoloss, run_cli


def test_check_cei_passes_and_prints_formula_and_verdicts():
    """check CEI: exit 0, prints expression, infix, latex, each gate's verdict and the ready-loss name."""
    result = run_cli("check", "CEI")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "expression: Neg(Dot(Mul(Y,W),Log(Softmax(X))))" in out
    assert "infix:      -dot(y * w, log(softmax(x)))" in out
    assert r"latex:      -\operatorname{dot}\left(y \cdot w" in out
    assert "size:       8 nodes, height 4" in out
    assert "validity:     pass" in out
    assert "convergence:  pass  sympy:" in out
    assert "(the ready loss CEI)" in out
    assert "Traceback" not in result.stderr


def test_check_rejected_loss_exits_1():
    """A loss the convergence gate rejects exits 1 and says why."""
    result = run_cli("check", "Dot(Y,Log(Softmax(X)))")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "convergence:  REJECT" in result.stdout
    assert "increases with the positive score" in result.stdout


def test_check_invalid_loss_exits_1_at_validity():
    """A NaN loss stops at the validity gate (exit 1) and is not sent to the convergence gate."""
    result = run_cli("check", "Neg(Dot(Y,Sqrt(X)))", "--symbolic", "never")
    assert result.returncode == 1
    assert "validity:     REJECT  NaN loss" in result.stdout
    assert "convergence:" not in result.stdout


def test_check_python_payload_is_a_clean_error(tmp_path):
    """A Python payload: exit 2, one error line, no traceback, nothing executed."""
    target = tmp_path / "pwned"
    result = autoloss("check", f"__import__('os').system('touch {target}')")
    assert_clean_error(result, "unexpected character")
    assert not target.exists()


@pytest.mark.parametrize("argv, words", [
    (["search", "--task", "noisy-digits", "--population", "6", "--top-k", "50", "--out", "{tmp}/out"],
     ["--top-k", "--population (6)"]),
    (["evaluate", "--detector", "fcos_small", "--loss-reg", "GIoU", "--out", "{tmp}/out"], ["--data DIR", "--demo"]),
    (["report", "{tmp}/nowhere"], ["nowhere", "does not exist"]),
])
def test_bad_input_from_a_real_process(tmp_path, argv, words):
    """One real ``python -m autoloss.cli`` process per subcommand (the other option tests run in-process):
    exit 2, one line, no traceback. ``check`` has its own above, ``export`` in tests/test_export.py."""
    result = autoloss(*[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert_clean_error(result, *words)
    assert not (tmp_path / "out" / "run.sqlite").exists()


def test_check_unknown_space_is_a_clean_error():
    """--space nope: exit 2 with one error line naming the space."""
    assert_clean_error(run_cli("check", "CE", "--space", "nope"), "unknown search space 'nope'")


def test_check_giou_in_reg():
    """check GIoU --space reg: exit 0, regression formula printed."""
    result = run_cli("check", "GIoU", "--space", "reg")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "space:      reg (regression)" in result.stdout
    assert "infix:      1 - (i / u - (e - u) / e)" in result.stdout
    assert "(the ready loss GIoU)" in result.stdout


@pytest.mark.skipif(shutil.which("autoloss") is None, reason="console script not on PATH")
def test_console_script_names_a_rewrite_of_a_ready_loss():
    """The installed `autoloss` script works; a rewrite of CE is named as the ready loss CE."""
    result = autoloss("check", "Dot(Y,Neg(Log(Softmax(X))))", "--symbolic", "never", script=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trains like the ready loss CE" in result.stdout


def test_check_authors_b_cls_with_a_short_timeout():
    """B_cls with a short --timeout: sympy gives up, the numeric verdict stands, exit 0."""
    expression = ("Neg(Add(Mul(Q,Mul(Add(1,Serf(Sig(NY))),Log(Sig(X)))),Mul(Add(Sgdf(X),Neg(Q)),Mul(Add(Add(1,"
                  "Neg(Q)),Neg(Add(1,Neg(Sig(X))))),Log(Add(1,Neg(Sig(X))))))))")
    result = autoloss("check", expression, "--space", "cls_sigmoid", "--timeout", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "convergence:  pass" in result.stdout
    assert "sympy undecided (timed out after 2.0 s)" in result.stdout
    assert "(the ready loss CSE-Autoloss-B_cls)" in result.stdout


def test_check_user_space_file(tmp_path):
    """--space accepts the path of a user's YAML file."""
    path = tmp_path / "mine.yaml"
    path.write_text(textwrap.dedent("""\
        name: mine
        mode: regression
        inputs:
          I: {role: intersection, shape: column}
          U: {role: union, shape: column}
          E: {role: enclosing, shape: column}
        operators: [Neg, Add, Sub, Div]
        output: column
        initial: IoU
        losses:
          IoU: Sub(1,Div(I,U))
        """))
    result = run_cli("check", "Add(1,Neg(Div(I,U)))", "--space", str(path), "--symbolic", "never")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "space:      mine (regression)" in result.stdout
    assert "trains like the ready loss IoU" in result.stdout


# ------------------------------------------------------------------------------ in-process


@pytest.mark.parametrize("args, words", [
    (["check", "__import__('os')"], ["unexpected character"]),
    (["check", "Neg(X)"], ["must be a column"]),
    (["check", "Dot(Y,Add(X,7))"], ["constant 7"]),
    (["check", "Neg(Log(Softmax(X)))", "--space", "cls_sigmoid"], ["'Softmax' is not in this search space"]),
    (["check", "CE", "--space", "reg"], ["unknown name 'CE'"]),
    (["check", "Neg(" * 1000 + "X" + ")" * 1000], ["nesting deeper than"]),
])
def test_main_reports_bad_input_as_exit_2(capsys, args, words):
    """main() turns every bad input into exit 2 and one stderr line naming the problem."""
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = captured.err.strip()
    assert line.startswith("autoloss: error:") and "\n" not in line
    for word in words:
        assert word in line


def test_parser_defaults():
    """check defaults: space cls_softmax, symbolic always, timeout 20 s."""
    args = build_parser().parse_args(["check", "CE"])
    assert (args.space, args.symbolic, args.timeout) == ("cls_softmax", "always", 20.0)


def test_no_command_is_a_usage_error(capsys):
    """Without a command argparse exits 2 with one line saying what is missing."""
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("autoloss: error:") and "COMMAND" in err and len(err.strip().splitlines()) == 1


def test_the_cli_finds_the_built_in_plug_ins_and_names_an_unknown_one():
    """cli imports autoloss.plugins: every built-in strategy and kind is registered; a typo is one UserError."""
    from autoloss.engine import registry
    from autoloss.errors import UserError

    assert {"cse", "vanilla", "random", "darts", "darts2", "ms-darts"} <= set(registry.strategies())
    assert registry.kind("cell").describer({}).noun == "cell"
    with pytest.raises(UserError, match="unknown strategy 'csee': expected one of .*cse"):
        registry.strategy("csee")
    with pytest.raises(UserError, match="kind 'bitz'.*cell, loss"):
        registry.kind("bitz")


def test_task_search_takes_the_iou_stand_in(tmp_path, capsys):
    """--iou reaches the noisy-digits task and is part of the stored run config (a resume must match it)."""
    out = tmp_path / "run"
    common = ["search", "--task", "noisy-digits", "--population", "4", "--generations", "1", "--top-k", "2",
              "--parents", "2", "--steps", "30", "--workers", "1", "--quiet", "--out", str(out)]
    assert main([*common, "--iou", "confidence"]) == 0
    from autoloss.engine.store import RunStore

    with RunStore(out / "run.sqlite") as store:
        assert store.load_config()["task"]["iou"] == "confidence"
    capsys.readouterr()
    assert main([*common, "--resume"]) == 2  # the default iou differs from the stored run's
    assert "different options" in capsys.readouterr().err
