"""autoloss export: generated functions equal the compiled trees, exported modules equal the Searched*
loss modules, import and train in a process without autoloss; runs, errors, the CLI and the zoo."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")

from mmdet.registry import MODELS

import autoloss.detection.mmdet.losses  # noqa: F401  (registers the Searched* modules)
from autoloss.cli import main
from autoloss.engine.store import RunStore
from autoloss.errors import ExpressionError, UserError
from autoloss.detection.export.codegen import parameter_names
from autoloss.detection.export.exporter import export_expression, export_run
from autoloss.detection.export.module import ExportedLoss, module_source
from autoloss.detection.export.zoo import zoo_path, zoo_source
from autoloss.loss.compile import compile_loss
from autoloss.loss.expression import parse
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.samples import prediction_input, probe_batch
from cli_helpers import assert_clean_error

torch.set_num_threads(2)

SEARCHED = {"softmax": "SearchedSoftmaxClsLoss", "sigmoid": "SearchedSigmoidClsLoss",
            "regression": "SearchedIoULoss"}
CASES = [  # (reduction, use weight, avg_factor), as tests/test_mmdet_losses.py
    ("mean", False, None), ("sum", False, None), ("none", False, None),
    ("mean", True, None), ("mean", True, 7.5), ("none", True, 7.5), ("sum", True, None),
]


def import_file(path: Path):
    """Import a generated module file under its own name (the import system runs it, as a config would)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def write_module(tmp_path: Path, name: str, losses: list[ExportedLoss]):
    path = tmp_path / f"{name}.py"
    path.write_text(module_source(losses, f"Test module {name}."))
    return import_file(path)


# ------------------------------------------------------------------------------------------------ functions


def _trees(space, count: int, seed: int):
    """The ready losses, random trees and mutation chains from the ready losses."""
    genotype, rng = LossGenotype(space), random.Random(seed)
    ready = [parse(text, space) for text in space.losses.values()]
    trees = list(ready) + [genotype.random(rng, 1, 5) for _ in range(count)]
    for node in ready:
        for _ in range(8):
            node = genotype.mutate(node, rng)
            trees.append(node)
    return ready, trees


def _assert_same(a: torch.Tensor, b: torch.Tensor, exact: bool, what: str) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert torch.equal(torch.isnan(a), torch.isnan(b)), what
    assert torch.equal(torch.isinf(a) & (a > 0), torch.isinf(b) & (b > 0)), what
    assert torch.equal(torch.isinf(a) & (a < 0), torch.isinf(b) & (b < 0)), what
    tolerance = {"rtol": 0, "atol": 0} if exact else {}
    torch.testing.assert_close(a, b, equal_nan=True, msg=what, **tolerance)


@pytest.mark.parametrize("space_name", ["cls_softmax", "cls_sigmoid", "reg"])
def test_generated_functions_equal_compiled_trees(space_name, spaces, tmp_path):
    """Values (bit for bit) and gradients (allclose), NaN and infinities in the same places."""
    space = spaces[space_name]
    ready, trees = _trees(space, 110, seed=len(space_name))
    losses = [ExportedLoss(node, space, f"Case{i}Loss", f"case{i}_loss", "A test case.")
              for i, node in enumerate(trees)]
    module = write_module(tmp_path, f"generated_{space_name}", losses)
    roles = ("intersection", "union", "enclosing") if space.mode == "regression" else ("logits", "target", "iou")
    order = [space.input_for(role).name for role in roles]
    assert parameter_names(space) == order
    for index, node in enumerate(trees):
        for dtype in (torch.float64, torch.float32) if node in ready else (torch.float64,):
            ours, theirs = probe_batch(space, dtype), probe_batch(space, dtype)
            for name in prediction_input(space):
                ours[name].requires_grad_()
                theirs[name].requires_grad_()
            expected = compile_loss(node, space.output)(**theirs)
            got = getattr(module, f"case{index}_loss")(*(ours[name] for name in order))
            _assert_same(got, expected, exact=True, what=f"value of {node}")
            if expected.requires_grad:
                expected.backward(torch.ones_like(expected))
                got.backward(torch.ones_like(got))
                for name in prediction_input(space):
                    if theirs[name].grad is None:
                        assert ours[name].grad is None
                    else:
                        _assert_same(ours[name].grad, theirs[name].grad, exact=False, what=f"d/d{name} of {node}")


def test_generated_code_reads_well(softmax, sigmoid, reg):
    from autoloss.detection.export.codegen import loss_function

    code = loss_function(parse("CE", softmax), softmax, "ce_loss")
    assert code.source.splitlines()[-1] == "    return -class_dot(Y, torch.log_softmax(X, dim=-1))"
    fl = loss_function(parse("FL", sigmoid), sigmoid, "fl_loss").source
    assert "sigmoid_x = torch.sigmoid(X)" in fl and "F.logsigmoid(-X)" in fl  # shared call, fusions
    giou = loss_function(parse("GIoU", reg), reg, "giou_loss").source
    assert "return 1 - (protected_div(I, U) - protected_div(E - U, E))" in giou
    assert all(len(line) <= 100 for line in fl.splitlines() + giou.splitlines())


@pytest.mark.parametrize("operator", ["Sgdf", "Salf", "Serf", "Serfc"])
def test_exported_rescaled_curve_imports_and_matches(operator, sigmoid, tmp_path):
    """A module whose only S-curve is one of the rescaled ones imports (math where its copy needs it) and
    computes the compiled tree, printed under the curve's rescaled name."""
    node = parse(f"Mul(W,{operator}(X))", sigmoid)
    module = write_module(tmp_path, f"curve_{operator.lower()}", [ExportedLoss(node, sigmoid, "CurveLoss",
                                                                               "curve_loss", "One curve.")])
    x = torch.linspace(-6, 6, 13, dtype=torch.float64).reshape(13, 1)
    w = torch.rand(13, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = compile_loss(node, sigmoid.output)(X=x, Y=torch.zeros_like(x), W=w)
    torch.testing.assert_close(module.curve_loss(x, torch.zeros_like(x), w), expected, rtol=0, atol=0)
    assert f"{operator.lower()}(x)" in module.curve_loss.__doc__


# ------------------------------------------------------------------------------------------------ modules


def _cls_inputs(n, columns, background, seed, with_iou):
    def make(use_weight):
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(n, columns, generator=g) * 3).requires_grad_()
        labels = torch.randint(0, background + 1, (n,), generator=g)
        weight = torch.rand(n, generator=g) if use_weight else None
        iou = torch.rand(n, generator=g) if with_iou else None
        return [x, labels], weight, ({"iou": iou} if with_iou else {})
    return make


def _box_inputs(n, seed):
    def make(use_weight):
        g = torch.Generator().manual_seed(seed)
        centres = torch.rand(n, 2, generator=g) * 100
        sizes = torch.rand(n, 2, generator=g) * 40 + 2
        target = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
        pred = target + torch.randn(n, 4, generator=g) * 5
        pred = torch.cat([torch.minimum(pred[:, :2], pred[:, 2:] - 0.5), pred[:, 2:]], 1)
        pred[0] = target[0] + 300  # disjoint
        weight = torch.rand(n, 4, generator=g) if use_weight else None
        return [pred.requires_grad_(), target], weight, {}
    return make


def _compare_modules(ours, theirs, make_inputs):
    for reduction, use_weight, avg_factor in CASES:
        args, weight, extra = make_inputs(use_weight)
        other = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
        kw = {"weight": weight, "avg_factor": avg_factor, "reduction_override": reduction, **extra}
        a, b = ours(*args, **kw), theirs(*other, **kw)
        what = f"{ours.expression}: {reduction}, weight {use_weight}, avg_factor {avg_factor}, {sorted(extra)}"
        _assert_same(a, b, exact=False, what=what)
        a.sum().backward()
        b.sum().backward()
        _assert_same(args[0].grad, other[0].grad, exact=False, what="gradient of " + what)


def _module_losses(spaces):
    """Losses of every mode for the module comparisons (the CSE-Autoloss ones come from the zoo)."""
    chosen = {"cls_softmax": ["CE", "CEI"], "cls_sigmoid": ["FL", "FLI"], "reg": ["IoU", "GIoU"]}
    losses = []
    for space_name, names in chosen.items():
        space = spaces[space_name]
        _, trees = _trees(space, 2, seed=7)
        nodes = [parse(n, space) for n in names] + trees[-2:]
        losses += [ExportedLoss(node, space, f"{space_name.title().replace('_', '')}{i}Loss",
                                f"{space_name}_{i}_loss", "A test case.") for i, node in enumerate(nodes)]
    return losses


def test_exported_modules_equal_searched_modules(spaces, tmp_path):
    module = write_module(tmp_path, "exported_cases", _module_losses(spaces))
    import autoloss.zoo.cse_autoloss as zoo

    pairs = [(getattr(module, loss.class_name), loss.space, str(loss.node)) for loss in _module_losses(spaces)]
    zoo_losses = {"CSEAutolossAClsLoss": "CSE-Autoloss-A_cls", "CSEAutolossARegLoss": "CSE-Autoloss-A_reg",
                  "CSEAutolossBClsLoss": "CSE-Autoloss-B_cls", "CSEAutolossBRegLoss": "CSE-Autoloss-B_reg"}
    for class_name, ready in zoo_losses.items():
        space = next(s for s in spaces.values() if ready in s.losses)
        pairs.append((getattr(zoo, class_name), space, ready))
    for cls, space, expression in pairs:
        assert MODELS.get(cls.__name__) is cls
        kwargs = {"loss_weight": 1.5}
        ours = MODELS.build({"type": cls.__name__, **kwargs})
        theirs = MODELS.build({"type": SEARCHED[space.mode], "expression": expression, "space": space.name, **kwargs})
        if space.mode == "regression":
            _compare_modules(ours, theirs, _box_inputs(30, 2))
            continue
        columns, background = (6, 5) if space.mode == "softmax" else (5, 5)  # softmax: background is a column
        for with_iou in (False, True):
            _compare_modules(ours, theirs, _cls_inputs(40, columns, background, 1, with_iou))
        if space.mode == "sigmoid":
            no_alpha = MODELS.build({"type": cls.__name__, "alpha": None})
            reference = MODELS.build({"type": SEARCHED["sigmoid"], "expression": expression, "alpha": None})
            x, labels, weight = torch.randn(12, 4), torch.randint(0, 5, (12,)), torch.rand(12, 4)
            _assert_same(no_alpha(x, labels, weight=weight), reference(x, labels, weight=weight), False, "alpha=None")


@pytest.mark.parametrize("mode,expression,shape", [("softmax", "CEI", (0, 6)), ("sigmoid", "FLI", (0, 5)),
                                                   ("regression", "GIoU", (0, 4))])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_exported_edge_cases_match(mode, expression, shape, reduction, spaces, tmp_path):
    space = next(s for s in spaces.values() if s.mode == mode)
    loss = ExportedLoss(parse(expression, space), space, f"Edge{mode.title()}{reduction.title()}Loss",
                        "edge_loss", "A test case.")
    cls = getattr(write_module(tmp_path, f"edge_{mode}_{reduction}", [loss]), loss.class_name)
    ours, theirs = cls(reduction=reduction), MODELS.build({"type": SEARCHED[mode], "expression": expression,
                                                           "reduction": reduction})
    pred = torch.zeros(shape, requires_grad=True)
    target = torch.zeros((0, 4)) if mode == "regression" else torch.zeros(0, dtype=torch.long)
    empty = ours(pred, target)
    assert empty.shape == () and empty.item() == 0.0 == theirs(pred, target).item()
    empty.backward()
    assert pred.grad is not None and pred.grad.shape == shape
    if mode == "regression":  # no positive weight: a zero connected to the graph, as GIoULoss
        (boxes, targets), _, _ = _box_inputs(5, 3)(False)
        zero = ours(boxes, targets, weight=torch.zeros(5))
        zero.backward()
        assert zero.item() == 0.0 and torch.equal(boxes.grad, torch.zeros_like(boxes))
        assert ours(boxes.detach().double(), targets).dtype == torch.float64
    with pytest.raises(ValueError):
        cls(reduction="average")


# ------------------------------------------------------------------------------------------------ runs


BASE_CONFIG = {"detector": "faster_rcnn_small", "genotype": "loss-tree", "space": "cls_softmax",
               "search": {"seed": 0, "strategy": "cse"},
               "task": {"branch": "cls", "detector": "faster_rcnn_small", "space": "cls_softmax"}}
CSE_A = "Neg(Dot(Mul(Y,Add(1,Sin(W))),Log(Softmax(X))))"
CE = "Neg(Dot(Y,Log(Softmax(X))))"


def make_run(run_dir: Path, rows, config=None) -> Path:
    """A run store: rows of (generation, genotype, proxy fitness | "failed" | None, mos fitness | None)."""
    with RunStore(run_dir / "run.sqlite") as store:
        store.save_config(config or BASE_CONFIG)
        for index, (generation, genotype, proxy, mos) in enumerate(rows):
            cid = store.add_candidate(generation, index, genotype, origin="baseline" if generation < 0 else "mutation")
            store.add_verdict(cid, "validity", True, "finite")
            if mos is not None:
                store.add_verdict(cid, "mos", True, f"fitness {mos}", {"fitness": mos})
            if proxy == "failed":
                store.add_verdict(cid, "proxy", False, "diverged", {}, status="failed")
            elif proxy is not None:
                store.add_verdict(cid, "proxy", True, f"fitness {proxy}",
                                  {"fitness": proxy, "mAP_50": 0.5, "mAP_75": 0.2, "iters": 100})
    return run_dir


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "demo-run", [
        (-1, "Neg(Dot(Mul(Y,W),Log(Softmax(X))))", 0.30, 0.40),
        (0, CSE_A, 0.35, 0.50),
        (0, CE, 0.32, None),
        (0, "Neg(Dot(Y,Log(Softmax(Sin(X)))))", "failed", 0.45),
        (0, "Neg(Dot(Y,Log(Softmax(Add(X,X)))))", None, None),
        (1, CSE_A, 0.34, None),  # the same loss again: exported once, with its best score
        (1, "Neg(Dot(Y,Log(Softmax(Abs(X)))))", float("nan"), None),  # stored as null: never ranked
    ])


def test_export_run_writes_the_best_losses(run_dir):
    result = export_run(run_dir, top=2, include_unconfirmed=True)  # one seed each: unconfirmed
    assert result.module_path == run_dir / "export" / "autoloss_demo_run.py"
    assert result.config_path == run_dir / "export" / "autoloss_demo_run_config.py"
    assert [loss.class_name for loss in result.losses] == ["AutolossRunDemoRunRank1ClsLoss",
                                                           "AutolossRunDemoRunRank2ClsLoss"]
    assert [str(loss.node) for loss in result.losses] == [CSE_A, CE] and result.notes == []
    text = result.module_path.read_text()
    assert "proxy mAP 0.3500 (baseline 0.3000, +0.0500)" in text and "MOS mAP 0.5000" in text
    assert "generation 1 of the search" in text and str(run_dir.resolve()) in text  # 1-based, as shown
    assert "import autoloss" not in text and "from autoloss" not in text and "exec(" not in text
    assert result.config_path.read_text() == result.snippet
    assert "custom_imports = dict(imports=['autoloss_demo_run'], allow_failed_imports=False)" in result.snippet
    assert "type='IoUAwareShared2FCBBoxHead'" in result.snippet  # rank 1 reads the IoU
    assert "type='AutolossRunDemoRunRank1ClsLoss'" in result.snippet
    assert "#   AutolossRunDemoRunRank2ClsLoss" in result.snippet  # the other one, as a comment

    module = import_file(result.module_path)
    rank1 = MODELS.get("AutolossRunDemoRunRank1ClsLoss")
    assert rank1 is module.AutolossRunDemoRunRank1ClsLoss and rank1.expression == CSE_A
    x, labels, iou = torch.randn(8, 5), torch.tensor([0, 1, 4, 2, 3, 4, 0, 1]), torch.rand(8)
    reference = MODELS.build({"type": "SearchedSoftmaxClsLoss", "expression": "CSE-Autoloss-A_cls"})
    torch.testing.assert_close(rank1()(x, labels, iou=iou), reference(x, labels, iou=iou))


def test_export_run_names_and_shortfalls(run_dir, tmp_path):
    result = export_run(run_dir, top=5, out=tmp_path / "mine.py", name="my-best", include_unconfirmed=True)
    assert [loss.class_name for loss in result.losses] == ["MyBestRank1ClsLoss", "MyBestRank2ClsLoss"]
    assert result.notes == ["only 2 losses besides the baseline finished their proxy evaluation (asked for 5)"]
    assert (tmp_path / "mine_config.py").is_file()

    only_baseline = make_run(tmp_path / "r2", [(-1, "Neg(Dot(Mul(Y,W),Log(Softmax(X))))", 0.3, None),
                                               (0, CE, None, None)])
    result = export_run(only_baseline, top=3)
    assert [loss.class_name for loss in result.losses] == ["AutolossRunR2BaselineClsLoss"]
    assert "only the baseline" in result.notes[0]
    assert "type='IoUAwareShared2FCBBoxHead'" in result.snippet

    task_config = {"genotype": "loss-tree", "space": "cls_sigmoid", "task_name": "noisy-digits",
                   "task": {"steps": 100}, "search": {"seed": 1}}
    task_run = make_run(tmp_path / "digits", [(0, "Neg(Mul(Y,Log(Sig(X))))", 0.9, None)], task_config)
    result = export_run(task_run, include_unconfirmed=True)
    assert "proxy accuracy 0.9000" in result.losses[0].title and "task noisy-digits" in result.losses[0].details[1]
    assert "model.bbox_head of a one-stage detector" in result.snippet and "use_sigmoid=True" in result.snippet


def read_fragment(path: Path) -> dict:
    from mmengine.config import Config

    return Config.fromfile(str(path), import_custom_modules=False).to_dict()


@pytest.mark.parametrize("detector,weight", [("faster_rcnn_small", 10.0), ("fcos_small", 1.0)])
def test_export_regression_run_snippet(detector, weight, tmp_path):
    config = {**BASE_CONFIG, "detector": detector, "space": "reg",
              "task": {"branch": "reg", "detector": detector, "space": "reg"}}
    run = make_run(tmp_path / "reg-run", [(-1, "GIoU", 0.2, None), (0, "Sub(1,Div(I,U))", 0.25, None)], config)
    fragment = read_fragment(export_run(run, include_unconfirmed=True).config_path)
    assert fragment["custom_imports"] == {"imports": ["autoloss_reg_run"], "allow_failed_imports": False}
    if detector.startswith("faster"):  # two-stage: the RoI head decodes its boxes for an IoU-type loss
        assert fragment["model"] == {"roi_head": {"bbox_head": {"reg_decoded_bbox": True, "loss_bbox": {
            "_delete_": True, "type": "AutolossRunRegRunRank1RegLoss", "loss_weight": weight}}}}
    else:
        assert fragment["model"] == {"bbox_head": {"loss_bbox": {
            "_delete_": True, "type": "AutolossRunRegRunRank1RegLoss", "loss_weight": weight}}}


def test_export_errors(tmp_path, run_dir):
    with pytest.raises(UserError, match="does not exist"):
        export_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no run.sqlite"):
        export_run(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []  # nothing created there
    unevaluated = make_run(tmp_path / "young", [(-1, "Neg(Dot(Mul(Y,W),Log(Softmax(X))))", None, 0.3),
                                                (0, CE, "failed", None)])
    with pytest.raises(UserError, match="has finished its proxy evaluation"):
        export_run(unevaluated)
    with pytest.raises(UserError, match="--top"):
        export_run(run_dir, top=0)
    broken = make_run(tmp_path / "broken", [(0, "Foo(X)", 0.3, None)])
    with pytest.raises(UserError, match="is not a loss of space cls_softmax"):
        export_run(broken)
    with pytest.raises(ExpressionError):
        export_expression("Neg(Dot(Y,Log(Softmax(X)))", out=tmp_path / "x.py")
    with pytest.raises(UserError, match="not a valid module name"):
        export_expression("CE", out=tmp_path / "my-loss.py")
    with pytest.raises(UserError, match="would hide"):
        export_expression("CE", out=tmp_path / "torch.py")
    with pytest.raises(UserError, match="one-stage"):
        export_expression("CEI", out=tmp_path / "x.py", detector="fcos_small")
    with pytest.raises(UserError, match="--name"):
        export_expression("CEI", out=tmp_path / "x.py", name="42")
    assert not (tmp_path / "x.py").exists()


def test_export_expression_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = export_expression("FLI", "cls_sigmoid")
    assert result.module_path == Path("autoloss_loss.py") and Path("autoloss_loss_config.py").is_file()
    assert [loss.class_name for loss in result.losses] == ["AutolossFLIClsLoss"]
    assert "model = dict(\n    bbox_head=dict(\n        type='IoUAwareFCOSHead'" in result.snippet
    assert "use_sigmoid=True" in result.snippet
    plain = export_expression("Neg(Dot(Y,Log(Softmax(Mul(2,X)))))", out=tmp_path / "plain.py", name="Sharp")
    assert plain.losses[0].class_name == "SharpClsLoss"
    # a cls loss goes into the IoU-aware head it was searched in, even when it does not read the IoU
    assert "type='IoUAwareShared2FCBBoxHead'" in plain.snippet
    assert "class IoUAwareShared2FCBBoxHead" in plain.module_path.read_text()
    box = export_expression("GIoU", "reg", out=tmp_path / "box.py", name="Box")
    assert "IoUAware" not in box.snippet and "IoUAware" not in box.module_path.read_text()  # no heads needed


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_exports_and_prints(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--top", "2", "--include-unconfirmed"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {run_dir / 'export' / 'autoloss_demo_run.py'}: 2 losses" in out
    assert f"wrote {run_dir / 'export' / 'autoloss_demo_run_config.py'}" in out and "custom_imports" in out
    assert main(["export", "--expression", "GIoU", "--space", "reg", "--out", str(tmp_path / "giou.py")]) == 0
    assert "AutolossGIoURegLoss" in capsys.readouterr().out


@pytest.mark.parametrize("argv,words", [
    (["export"], ["nothing to export"]),
    (["export", "RUN", "--expression", "CE"], ["not both"]),
    (["export", "--expression", "CE", "--top", "3"], ["--top"]),
    (["export", "--expression", "Neg(Foo(X))"], ["unknown name 'Foo'"]),
    (["export", "/no/such/run"], ["does not exist"]),
])
def test_cli_errors_are_one_line(argv, words, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autoloss: error:") and all(w in lines[0] for w in words)


def test_export_error_from_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "autoloss.cli", "export", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=120)
    assert_clean_error(result, "does not exist")


# ------------------------------------------------------------------------------------------------ zoo


def test_zoo_module_is_up_to_date():
    text = zoo_path().read_text(encoding="utf-8")
    assert text == zoo_source(), "autoloss/zoo/cse_autoloss.py is stale: run python scripts/regenerate_zoo.py"
    tree = ast.parse(text)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "inspect", "math", "typing", "torch", "mmdet", "mmengine"}
    called = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}


# ------------------------------------------------------------------------------------------------ standalone


TRAIN_SCRIPT = r'''
"""Import the exported modules and train with the config fragments, autoloss made unimportable."""
import json
import sys


class NoAutoloss:
    def find_spec(self, name, path=None, target=None):
        if name == "autoloss" or name.startswith("autoloss."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, NoAutoloss())
job = json.loads(sys.argv[1])
sys.path[:0] = job["paths"]

import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

torch.set_num_threads(2)
register_all_modules()


def train(cfg, steps=2):
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    head = model.roi_head.bbox_head if hasattr(model, "roi_head") else model.bbox_head
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    batches, history = iter(loader), []
    for _ in range(steps):
        data = model.data_preprocessor(next(batches), True)
        loss, log_vars = model.parse_losses(model(**data, mode="loss"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({k: float(v) for k, v in log_vars.items()})
    name = lambda m: f"{type(m).__module__}.{type(m).__name__}"
    return {"head": name(head), "loss_cls": name(head.loss_cls), "loss_bbox": name(head.loss_bbox),
            "history": history}


report = {}
# Faster R-CNN: the detector's config, with the model dicts of two fragments merged in
cfg = Config.fromfile(job["faster_rcnn"]["base"])
for fragment in job["faster_rcnn"]["fragments"]:
    cfg.merge_from_dict({"model": Config.fromfile(fragment).model})  # fromfile imports the module
report["faster_rcnn"] = train(cfg)
# FCOS: a config made of `_base_ = [detector config]` and the fragment pasted below it
report["fcos"] = train(Config.fromfile(job["fcos"]))
report["autoloss_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "autoloss")
report["registered"] = {name: MODELS.get(name).__module__ for name in job["classes"]}

# autoloss importable again: importing its heads after the exported modules must not clash
sys.meta_path.pop(0)
import importlib
import autoloss.detection.mmdet.detectors  # noqa: F401  (registers autoloss's heads and losses)
for module in job["modules"]:
    importlib.reload(sys.modules[module])
report["heads_after_autoloss"] = MODELS.get("IoUAwareFCOSHead").__module__
print("REPORT " + json.dumps(report))
'''


@pytest.mark.slow
def test_exported_modules_train_without_autoloss(run_dir, tmp_path):
    from autoloss.detection.coco import find_coco_splits
    from autoloss.detection.synthetic import make_synthetic_coco
    from autoloss.detection.mmdet.detectors import load_detector_config

    make_synthetic_coco(tmp_path / "coco", num_train=8, num_val=4)
    splits = find_coco_splits(tmp_path / "coco")
    modules = tmp_path / "modules"
    cls_export = export_run(run_dir, top=2, out=modules / "fr_cls.py", include_unconfirmed=True)  # CSE-Autoloss-A_cls: reads the IoU
    reg_export = export_expression("CSE-Autoloss-A_reg", "reg", out=modules / "fr_reg.py", name="FrBox",
                                   detector="faster_rcnn_small")
    fcos_export = export_expression("FLI", "cls_sigmoid", out=modules / "fcos_cls.py", detector="fcos_small")
    assert "reg_decoded_bbox=True" in reg_export.snippet and "loss_weight=10.0" in reg_export.snippet

    configs = tmp_path / "configs"
    configs.mkdir()
    for name in ("faster_rcnn_small", "fcos_small"):
        cfg = load_detector_config(name, splits, tmp_path / "work", max_iters=3, batch_size=2)
        cfg.train_dataloader.num_workers = 0
        cfg.train_dataloader.persistent_workers = False
        cfg.dump(str(configs / f"{name}.py"))
    fcos_config = configs / "fcos_train.py"
    fcos_config.write_text("_base_ = ['./fcos_small.py']\n\n" + fcos_export.config_path.read_text())

    classes = [loss.class_name for e in (cls_export, reg_export, fcos_export) for loss in e.losses]
    job = {"paths": [str(modules)], "classes": classes + ["IoUAwareShared2FCBBoxHead", "IoUAwareFCOSHead"],
           "modules": ["fr_cls", "fr_reg", "fcos_cls"], "fcos": str(fcos_config),
           "faster_rcnn": {"base": str(configs / "faster_rcnn_small.py"),
                           "fragments": [str(cls_export.config_path), str(reg_export.config_path)]}}
    script = tmp_path / "train_exported.py"
    script.write_text(TRAIN_SCRIPT)
    result = subprocess.run([sys.executable, "-I", str(script), json.dumps(job)], capture_output=True, text=True,
                            timeout=240, cwd=tmp_path)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])

    assert report["autoloss_modules"] == []
    assert report["registered"]["AutolossRunDemoRunRank1ClsLoss"] == "fr_cls"
    assert report["registered"]["FrBoxRegLoss"] == "fr_reg"
    assert report["registered"]["AutolossFLIClsLoss"] == "fcos_cls"
    assert report["registered"]["IoUAwareShared2FCBBoxHead"] in ("fr_cls", "fcos_cls")
    fr, fcos = report["faster_rcnn"], report["fcos"]
    assert fr["head"].endswith(".IoUAwareShared2FCBBoxHead") and fr["head"].split(".")[0] in ("fr_cls", "fcos_cls")
    assert fr["loss_cls"] == "fr_cls.AutolossRunDemoRunRank1ClsLoss" and fr["loss_bbox"] == "fr_reg.FrBoxRegLoss"
    assert fcos["head"].endswith(".IoUAwareFCOSHead") and fcos["loss_cls"] == "fcos_cls.AutolossFLIClsLoss"
    for run in (fr, fcos):
        assert len(run["history"]) == 2
        for step in run["history"]:
            assert all(math.isfinite(v) for v in step.values()), step
            assert step["loss"] > 0
    assert report["heads_after_autoloss"] == "autoloss.detection.mmdet.heads"


@pytest.mark.parametrize("detector, fragment", [
    ("faster_rcnn_small", "roi_head=dict(bbox_head=dict(type='IoUAwareShared2FCBBoxHead', reg_decoded_bbox=True, "
                          "loss_cls=dict(_delete_=True, type='CSEAutolossAClsLoss', loss_weight=1.0), "
                          "loss_bbox=dict(_delete_=True, type='CSEAutolossARegLoss', loss_weight=10.0)))"),
    ("fcos_small", "bbox_head=dict(type='IoUAwareFCOSHead', "
                   "loss_cls=dict(_delete_=True, type='CSEAutolossBClsLoss', use_sigmoid=True, loss_weight=1.0), "
                   "loss_bbox=dict(_delete_=True, type='CSEAutolossBRegLoss', loss_weight=1.0))"),
])
def test_zoo_losses_are_usable_by_name_in_a_config(detector, fragment, tmp_path):
    """custom_imports of autoloss.zoo.cse_autoloss, then the paper's losses by name: one training step."""
    from mmengine.runner import Runner

    from autoloss.detection.coco import find_coco_splits
    from autoloss.detection.synthetic import make_synthetic_coco
    from autoloss.detection.mmdet.detectors import build_detector, detector_config_path, load_detector_config

    make_synthetic_coco(tmp_path / "data", num_train=4, num_val=2, seed=0)
    config = tmp_path / "with_zoo.py"
    config.write_text(f"_base_ = [{str(detector_config_path(detector).resolve())!r}]\n"
                      "custom_imports = dict(imports=['autoloss.zoo.cse_autoloss'], allow_failed_imports=False)\n"
                      f"model = dict({fragment})\n")
    cfg = load_detector_config(config, find_coco_splits(tmp_path / "data"), tmp_path / "work", batch_size=2)
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    torch.manual_seed(0)
    model = build_detector(cfg)
    model.train()
    head = model.roi_head.bbox_head if detector.startswith("faster") else model.bbox_head
    assert type(head.loss_cls).__name__.startswith("CSEAutoloss") and type(head.loss_bbox).__name__.startswith("CSEAutoloss")
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
    losses = model(**model.data_preprocessor(batch, True), mode="loss")
    loss, _ = model.parse_losses(losses)
    assert math.isfinite(loss.item())
    loss.backward()


def test_a_run_whose_best_is_below_the_baseline_exports_nothing_unless_asked(tmp_path, capsys):
    run = make_run(tmp_path / "worse", [(-1, "Neg(Dot(Mul(Y,W),Log(Softmax(X))))", 0.192, 0.288),
                                        (0, CSE_A, 0.051, 0.296), (0, CE, 0.10, None)])
    assert main(["export", str(run)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "confirmed better" in captured.err and "--include-unconfirmed" in captured.err
    assert main(["export", str(run), "--include-unconfirmed"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "beat the baseline" in captured.err and "--include-worse" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not (run / "export").exists()
    assert main(["export", str(run), "--include-worse", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("warning:") == 2 and "prefer the baseline" in out
    module = next((run / "export").glob("autoloss_*[!g].py"))
    assert module.read_text().count("WORSE THAN THE BASELINE") >= 2


def test_a_run_whose_best_beats_the_baseline_exports_only_the_better_ones(tmp_path, capsys):
    run = make_run(tmp_path / "better", [(-1, "Neg(Dot(Mul(Y,W),Log(Softmax(X))))", 0.30, 0.4),
                                         (0, CSE_A, 0.35, 0.5), (0, CE, 0.20, None)])
    assert main(["export", str(run), "--top", "2"]) == 1  # one seed each: nothing confirmed
    assert "--include-unconfirmed" in capsys.readouterr().err
    assert main(["export", str(run), "--top", "2", "--include-unconfirmed"]) == 0
    out = capsys.readouterr().out
    assert "1 loss from" in out and "prefer the baseline" not in out and "did not beat the baseline" in out
    assert "is not confirmed better than the baseline" in out
    module = next((run / "export").glob("autoloss_*[!g].py"))
    assert "WORSE THAN THE BASELINE" not in module.read_text() and "UNCONFIRMED" in module.read_text()


# ------------------------------------------------------------------------------------------------ hostile runs


@pytest.mark.parametrize("case", ["newline code", "docstring close", "single quotes", "backslashes", "named escape",
                                  "unicode", "carriage return"])
def test_stored_text_reaches_the_loss_module_only_as_data(tmp_path, case, capsys):
    """The same rule as the cell exporter's: the metric, the task name, the strategy, a candidate's origin
    and the run folder's name enter the module as literals; it imports, runs nothing planted, and RUN
    gives them back exactly."""
    from test_cell_export import hostile_texts

    marker = tmp_path / "PWNED"
    text = hostile_texts(marker)[case]
    folder = "run" + text.replace("/", "_")
    config = {"genotype": "loss-tree", "space": "cls_softmax", "task_name": text, "metric": text,
              "task": {"steps": 100, "branch": "cls"}, "search": {"seed": 1, "strategy": text}}
    run = make_run(tmp_path / folder, [(-1, "Neg(Dot(Mul(Y,W),Log(Softmax(X))))", 0.3, None), (0, CSE_A, 0.35, None)],
                   config)
    with RunStore(run / "run.sqlite") as store:
        store._db.execute("UPDATE candidates SET origin = ?", (text,))
    out = tmp_path / f"hostile_{abs(hash(case))}.py"
    assert main(["export", str(run), "--out", str(out), "--include-worse", "--include-unconfirmed"]) == 0, \
        capsys.readouterr().err
    module = import_file(out)
    assert not marker.exists()
    assert module.RUN == {"run": folder, "run_dir": str(run.resolve()), "metric": text, "space": "cls_softmax",
                          "task": text, "branch": "cls"}
    ast.parse(out.with_name(out.stem + "_config.py").read_text())


def test_a_full_disk_leaves_the_existing_module_whole(run_dir, tmp_path, capsys, monkeypatch):
    """Export over an existing module when the disk fills mid-write: the old file stays whole, no
    temporary file is left, one line says the disk is full (write_text emptied the file first)."""
    import errno

    from autoloss import files

    (tmp_path / "mine").mkdir()
    out = tmp_path / "mine" / "mine.py"
    old = "# the user's module\n" * 50
    out.write_text(old)

    class Full:  # the disk fills after 100 bytes
        def __init__(self, fd):
            self.real, self.written = os.fdopen(fd, "wb"), 0

        def write(self, data):
            self.written += len(data)
            if self.written > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.real.write(data)

        def close(self):
            self.real.close()

    monkeypatch.setattr(files, "_open_temporary", Full)
    assert main(["export", str(run_dir), "--out", str(out), "--include-worse", "--include-unconfirmed"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "disk full" in lines[0] and str(out) in lines[0], captured.err
    assert out.read_text() == old
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine.py"]
