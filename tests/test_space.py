"""Search spaces: the bundled YAML files, user files given by path, and clear errors for bad files."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from autoloss.errors import UserError
from autoloss.loss.expression import parse
from autoloss.loss.primitives import BINARY, OPERATORS, UNARY
from autoloss.loss.space import bundled_dir, bundled_names, load_space, parse_space

# ------------------------------------------------------------------------------ bundled spaces


def test_bundled_dir_holds_the_three_yaml_files():
    """bundled_dir() is a folder containing the bundled spaces' YAML files."""
    folder = bundled_dir()
    assert folder.is_dir()
    assert {p.name for p in folder.glob("*.yaml")} >= {"cls_softmax.yaml", "cls_sigmoid.yaml", "reg.yaml"}
    assert bundled_names() == sorted(p.stem for p in folder.glob("*.yaml"))


@pytest.mark.parametrize("name, mode, branch, output, roles", [
    ("cls_softmax", "softmax", "cls", "column", {"logits", "target", "iou"}),
    ("cls_sigmoid", "sigmoid", "cls", "matrix", {"logits", "target", "iou"}),
    ("reg", "regression", "reg", "column", {"intersection", "union", "enclosing"}),
])
def test_bundled_space_loads_by_name(name, mode, branch, output, roles):
    """Each bundled space loads by its bare name with the documented mode, branch, output and roles."""
    space = load_space(name)
    assert (space.name, space.mode, space.branch, space.output) == (name, mode, branch, output)
    assert {i.role for i in space.inputs} == roles
    assert space.constants == (1, 2, 3)
    assert space.source.endswith(f"{name}.yaml")
    assert space.initial in space.losses
    assert space.initial_expression == space.losses[space.initial]


def test_operator_table_is_the_papers_16_unary_and_5_binary():
    """The primitive table has the paper's 16 unary and 5 binary operators."""
    assert len(UNARY) == 16 and len(BINARY) == 5
    assert set(BINARY) == {"Add", "Sub", "Mul", "Div", "Dot"}


def test_softmax_space_has_all_21_operators(softmax):
    """cls_softmax allows all 21 operators: 16 unary and 5 binary."""
    assert len(softmax.operators) == 21
    assert sum(OPERATORS[o].arity == 1 for o in softmax.operators) == 16
    assert sum(OPERATORS[o].arity == 2 for o in softmax.operators) == 5
    assert set(softmax.operators) == set(OPERATORS)


def test_sigmoid_space_drops_the_class_coupling_operators(sigmoid):
    """cls_sigmoid has every operator except Softmax and Dot."""
    assert set(sigmoid.operators) == set(OPERATORS) - {"Softmax", "Dot"}


def test_reg_space_has_fewer_operators(reg, softmax):
    """reg has a smaller operator set than classification, still with unary and binary operators."""
    assert len(reg.operators) < len(softmax.operators)
    assert set(reg.operators) == {"Neg", "Exp", "Log", "Sqrt", "Add", "Sub", "Mul", "Div"}


@pytest.mark.parametrize("name", ["cls_softmax", "cls_sigmoid", "reg"])
def test_every_ready_loss_parses_in_its_space(spaces, name):
    """The named ready losses of every bundled space parse and have the space's output shape."""
    space = spaces[name]
    assert len(space.losses) >= 3
    for text in space.losses.values():
        assert parse(text, space).shape == space.output


def test_input_for_finds_inputs_by_role(softmax, reg):
    """input_for maps a role to the input carrying it."""
    assert softmax.input_for("logits").name == "X"
    assert softmax.input_for("iou").shape == "column"
    assert reg.input_for("enclosing").name == "E"


def test_unknown_bundled_name_is_a_user_error():
    """An unknown space name is refused, listing the bundled names."""
    with pytest.raises(UserError, match="unknown search space 'nope'.*cls_softmax"):
        load_space("nope")


def test_missing_yaml_path_is_a_user_error(tmp_path):
    """A .yaml path that does not exist is refused as not found."""
    with pytest.raises(UserError, match="not found"):
        load_space(tmp_path / "absent.yaml")


# ------------------------------------------------------------------------------ user files

USER_SPACE = textwrap.dedent("""\
    name: my_reg
    mode: regression
    inputs:
      A: {role: intersection, shape: column}
      B: {role: union, shape: column}
      C: {role: enclosing, shape: column}
    constants: [1, 2]
    operators: [Neg, Add, Sub, Div]
    output: column
    limits: {max_height: 5, max_size: 20}
    initial: L
    losses:
      L: Sub(1,Div(A,B))
    """)


@pytest.fixture
def user_yaml(tmp_path):
    path = tmp_path / "my_reg.yaml"
    path.write_text(USER_SPACE)
    return path


def test_user_yaml_loads_by_path(user_yaml):
    """A user's YAML file loads by path, with its own names, constants, operators and limits."""
    space = load_space(str(user_yaml))
    assert space.name == "my_reg" and space.mode == "regression" and space.branch == "reg"
    assert [i.name for i in space.inputs] == ["A", "B", "C"]
    assert space.constants == (1, 2)
    assert space.operators == ("Neg", "Add", "Sub", "Div")
    assert (space.max_height, space.max_size) == (5, 20)
    assert space.source == str(user_yaml)
    assert str(parse("L", space)) == "Sub(1,Div(A,B))"


def test_user_file_without_yaml_suffix_loads(tmp_path):
    """An existing file is read as a space even without a .yaml suffix."""
    path = tmp_path / "space.txt"
    path.write_text(USER_SPACE)
    assert load_space(path).name == "my_reg"


def test_user_space_restricts_parsing(user_yaml):
    """Constants and operators outside a user's space are refused when parsing in it."""
    from autoloss.errors import ExpressionError

    space = load_space(user_yaml)
    with pytest.raises(ExpressionError, match="constant 3"):
        parse("Sub(3,Div(A,B))", space)
    with pytest.raises(ExpressionError, match="'Mul' is not in this search space"):
        parse("Mul(A,B)", space)


def _mutated(**changes) -> str:
    data = yaml.safe_load(USER_SPACE)
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return yaml.safe_dump(data)


@pytest.mark.parametrize("text, message", [
    (_mutated(operators=None), "missing key 'operators'"),
    (_mutated(initial=None), "missing key 'initial'"),
    (_mutated(losses=None), "missing key 'losses'"),
    (_mutated(operators=["Neg", "Add", "Frobnicate"]), "unknown operator.*Frobnicate"),
    (_mutated(mode="ranking"), "mode 'ranking' is not one of"),
    (_mutated(mode="softmax"), "mode 'softmax' needs exactly one input of each role"),
    (_mutated(operators=["Neg", "Exp"]), "at least one unary and one binary"),
    (_mutated(operators=["Neg", "Add", "Softmax"]), "only allowed in softmax mode"),
    (_mutated(constants=[1, -2]), "constants must be positive integers"),
    (_mutated(constants=[1, True]), "constants must be positive integers"),
    (_mutated(output="cube"), "output must be one of"),
    (_mutated(limits={"max_height": 40}), "limits"),
    (_mutated(initial="GIoU"), "initial loss 'GIoU' is not one of the named losses"),
    (_mutated(aliases={"Add": "A"}), "aliases shadow inputs or operators: Add"),
    (_mutated(inputs={"A": {"role": "intersection"}}), "input 'A' needs a role and a shape"),
    (_mutated(inputs={"A": {"role": "intersection", "shape": "cube"}}), "input 'A': shape must be one of"),
    (_mutated(inputs={"1A": {"role": "intersection", "shape": "column"}}), "not an identifier"),
    (_mutated(inputs={}), "'inputs' must map input names"),
    ("- just\n- a list\n", "expected a mapping at the top level"),
    ("name: [unclosed\nmode: : :\n", "is not valid YAML"),
])
def test_malformed_space_file_is_one_clear_user_error(tmp_path, text, message):
    """A malformed space file raises UserError naming the file and the problem."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", [
    _mutated(operators=None) + "operators:\n",  # key present, left empty
    _mutated(limits={"max_height": "eight"}),
    _mutated(losses=["L"]),
], ids=["empty-operators", "non-integer-limit", "losses-as-list"])
def test_wrongly_typed_value_is_a_user_error(tmp_path, text):
    """A value of the wrong type (empty list, word for a number, list for a mapping) is a UserError."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="search space .*bad.yaml: "):
        load_space(path)


def test_parse_space_accepts_a_dict():
    """parse_space validates already-decoded data too (the same checks as files)."""
    space = parse_space(yaml.safe_load(USER_SPACE), source="inline")
    assert space.source == "inline" and space.initial == "L"
    with pytest.raises(UserError, match="search space inline: missing key 'name'"):
        parse_space({k: v for k, v in yaml.safe_load(USER_SPACE).items() if k != "name"}, source="inline")
