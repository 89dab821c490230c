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


# ------------------------------------------------------------------------------ hostile files

BASE = (bundled_dir() / "cls_softmax.yaml").read_text()


def _laughs(levels: int = 9) -> str:
    """A "billion laughs" file: 10 ** levels values behind 1.7 KB of anchors, under the space's aliases."""
    lines = ["  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return BASE.replace("aliases:\n  Z: W\n", "aliases:\n  Z: W\n" + "\n".join(lines) + "\n")


HOSTILE_FILES = {
    "billion-laughs": (_laughs(), "more than 20,000 values once aliases are expanded"),
    "self-alias": (BASE + "extra: &r [*r]\n", "repeats a node that contains it"),
    "deep-flow-list": (BASE + "extra: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 32 levels"),
    "deep-block-mapping": (BASE + "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n",
                           "nested more than 32 levels"),
    "too-large": (BASE + "# " + "x" * 1_100_000 + "\n", "a search space may be at most 1,000,000"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not UTF-8 text (byte 0x89 at offset 0)"),
    "latin-1": (BASE.replace("Multi-class", "Multi-cl\xe9ss").encode("latin-1"), "is not UTF-8 text (byte 0xe9"),
    "nul-bytes": (BASE + "\x00\x00", "contains NUL bytes"),
    "duplicate-key": (BASE + "name: again\n", "duplicate key 'name' at line"),
    "duplicate-nested-key": (BASE.replace("  max_size: 32\n", "  max_size: 32\n  max_height: 3\n"),
                             "duplicate key 'max_height'"),
    "python-tag": ("!!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
    "second-document": (BASE + "---\n" + BASE, "expected a single document"),
    "unclosed-flow": ("name: [unclosed\nmode: : :\n", "expected ',' or ']', but got ':' at line 2, column 5"),
    "second-iou-input": (BASE.replace("  W: {role: iou", "  V: {role: iou, shape: column}\n  W: {role: iou"),
                         "two inputs have the role iou: V and W"),
    "dunder-input": (BASE.replace("  W: {role: iou", "  __class__: {role: iou"), "'__class__' is reserved"),
    "keyword-input": (BASE.replace("  W: {role: iou", "  lambda: {role: iou"), "'lambda' is reserved"),
    "operator-input": (BASE.replace("  W: {role: iou", "  Exp: {role: iou"), "'Exp' is the name of an operator"),
    "unicode-input": (BASE.replace("  W: {role: iou", "  Wé: {role: iou"), "not an identifier of at most 32 ASCII"),
    "fullwidth-input": (BASE.replace("  W: {role: iou", "  Ｗ: {role: iou"), "not an identifier of at most 32 ASCII"),
    "dunder-alias": (BASE.replace("  Z: W", "  __init__: W"), "alias name '__init__' is reserved"),
    "loss-not-a-string": (BASE.replace("  CE: Neg(Dot(Y,Log(Softmax(X))))", "  CE: [1, 2]"),
                          "loss 'CE' must be a non-empty string"),
    "branch-of-other-mode": (BASE.replace("branch: cls", "branch: reg"), "branch 'reg' does not fit mode 'softmax'"),
    "huge-integer": (BASE.replace("constants: [1, 2, 3]", "constants: [1, " + "9" * 5000 + "]"),
                     "an integer of 5,000 characters"),
    "large-constant": (BASE.replace("constants: [1, 2, 3]", "constants: [1, 10000000]"),
                       "constants must be positive integers"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_space_file_is_refused_fast_in_bounded_memory(tmp_path, case):
    """Each hostile or malformed file is one line naming it and the problem, within a second and 20 MB."""
    import time
    import tracemalloc

    content, message = HOSTILE_FILES[case]
    path = tmp_path / "space.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(UserError) as info:
            load_space(path)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = str(info.value)
    assert message in text and str(path) in text
    assert "\n" not in text and len(text) < 400
    assert seconds < 5 and peak < 20e6, (seconds, peak)


def test_merge_keys_and_small_anchors_still_load(tmp_path):
    """Anchors that expand to a few values, and merge keys overridden by the mapping's own keys, are fine."""
    text = BASE.replace("limits:\n  max_height: 8\n  max_size: 32\n",
                        "defaults: &limits {max_height: 6, max_size: 30}\nlimits:\n  <<: *limits\n  max_size: 20\n")
    path = tmp_path / "space.yaml"
    path.write_text(text)
    space = load_space(path)
    assert (space.max_height, space.max_size) == (6, 20)


@pytest.mark.parametrize("target, message", [
    ("/proc/self/mem", r"cannot be read \(Input/output error\)"),
    ("/dev/zero", "is not a regular file"),
])
def test_special_files_are_refused(target, message):
    """A file that cannot be read as a whole, or a device, is one line, not a crash or an endless read."""
    import os

    if not os.path.exists(target):
        pytest.skip(f"{target} does not exist here")
    with pytest.raises(UserError, match=message):
        load_space(target)


def test_directory_is_called_a_directory(tmp_path):
    """A directory given as a space is called a directory, with or without a .yaml suffix."""
    for folder in (tmp_path / "spaces", tmp_path / "spaces.yaml"):
        folder.mkdir()
        with pytest.raises(UserError, match="is a directory, not a YAML file"):
            load_space(folder)


def test_bundled_name_wins_over_a_directory_of_that_name(tmp_path, monkeypatch):
    """`--space reg` in a folder that has a `reg/` directory still means the bundled space."""
    (tmp_path / "reg").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_space("reg").name == "reg"


def test_long_unknown_name_is_cut_in_the_message():
    """An unknown space name of 10,000 characters is echoed cut short, on one line."""
    with pytest.raises(UserError) as info:
        load_space("x" * 10_000)
    assert len(str(info.value)) < 400 and "..." in str(info.value)
