#!/usr/bin/env python3
"""Run a table of hostile and malformed inputs against the installed ``autoloss`` command.

Each case runs ``autoloss ARGS`` in a child process with a timeout and an address-space limit, in a
fresh folder of its own, and is classified as

* clean: it exited as expected (2 for bad input) with one ``autoloss: error:`` line on stderr and no
  traceback (or exited 0 for the few control cases that must work);
* traceback: a Python traceback reached the user;
* hang: it ran past its timeout;
* executed: a canary ran: the case's MARKER file exists afterwards (expressions, YAML tags and
  tampered stores that would create it if anything evaluated or imported them);
* accepted: bad input that exited 0 all the same;
* lost: a file of the user's (the case's ``keep`` paths) was deleted or changed;
* unclear: any other exit (a wrong code, several lines, nothing on stderr).

A case's ``after`` runs once the command has finished (e.g. imports a module it exported, so that
code planted in it would run and touch MARKER); ``readonly`` names a folder mounted read-only for
the command (``unshare -rm``: read-only media without root).

    python scripts/probe_inputs.py                     # all groups, about 5-10 minutes on 2 cores
    python scripts/probe_inputs.py --only expressions --only spaces
    python scripts/probe_inputs.py --list
    python scripts/probe_inputs.py --json probe.json --markdown probe.md

Exit status: 0 when every case is clean, 1 otherwise. To add a case, append a :class:`Case` to
:data:`CASES` (``{tmp}``, ``{marker}``, ``{run}`` and ``{data}`` in its arguments are filled in:
the case's folder, its marker file, a copy of a finished tiny run and a copy of a small COCO set).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

OUTCOMES = ("clean", "traceback", "hang", "executed", "accepted", "lost", "unclear")
TINY = ["--population", "2", "--generations", "1", "--top-k", "1", "--parents", "1"]
TASK = ["search", "--task", "noisy-digits", "--branch", "cls", *TINY, "--steps", "5", "--quiet"]
DETECTOR = ["search", "--detector", "faster_rcnn_small", "--branch", "cls", *TINY, "--quiet"]


@dataclass
class Case:
    """One invocation: ``autoloss ARGS`` after ``setup(folder)``, expected to exit ``expect``."""

    group: str
    name: str
    args: list[str]
    setup: Callable[[Path], None] | None = None
    expect: tuple[int, ...] = (2,)  # 2: bad input refused; 0: a control that must work
    needs: tuple[str, ...] = ()  # "run" (a finished tiny run) and/or "data" (a small COCO set)
    timeout: float = 60.0
    memory_gb: float = 4.0
    keep: tuple[str, ...] = ()  # the user's files (relative to the case's folder): never deleted nor changed
    after: Callable[[Path], None] | None = None  # run after the command (before MARKER is looked for)
    readonly: str | None = None  # a folder (relative to the case's folder) mounted read-only for the command


@dataclass
class Result:
    group: str
    name: str
    outcome: str
    exit_code: int | None
    seconds: float
    stderr_tail: str = ""
    command: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ setups


def write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return setup


def space_text() -> str:
    """The bundled cls_softmax space of the installed package, the base of the malformed ones."""
    from autoloss.loss.space import bundled_dir

    return (bundled_dir() / "cls_softmax.yaml").read_text()


def space(name: str, edit: Callable[[str], str | bytes]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        write(name, edit(space_text()))(folder)
    return setup


def laughs(text: str) -> str:
    lines = ["  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return text.replace("aliases:\n  Z: W\n", "aliases:\n  Z: W\n" + "\n".join(lines) + "\n")


def store(sql: str | None = None, truncate: int | None = None, damage_page: int | None = None,
          zero: bool = False) -> Callable[[Path], None]:
    """Damage the copied run's run.sqlite: an SQL statement, a truncation, a page of garbage, zero bytes."""
    def setup(folder: Path) -> None:
        db = folder / "run" / "run.sqlite"
        if sql is not None:
            with sqlite3.connect(db) as con:
                con.executescript(sql.format(tmp=folder, marker=folder / "MARKER"))
            con.close()
        data = db.read_bytes()
        if zero:
            data = b""
        if truncate is not None:
            data = data[:truncate]
        if damage_page is not None:
            page = 4096
            start = damage_page * page
            data = data[:start] + os.urandom(page) + data[start + page:]
        db.write_bytes(data)
    return setup


def evil_config(folder: Path) -> None:
    """A detector config that touches MARKER when executed, for a tampered store to point at."""
    (folder / "evil_cfg.py").write_text(f"import pathlib\npathlib.Path({str(folder / 'MARKER')!r}).touch()\n")


def combine(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        for one in setups:
            one(folder)
    return setup


def coco(mutate: Callable[[dict], None] | None = None, image: bytes | None = None,
         split: str = "train") -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        ann = folder / "data" / "annotations" / f"instances_{split}.json"
        if mutate is not None:
            data = json.loads(ann.read_text())
            mutate(data)
            ann.write_text(json.dumps(data))  # NaN and Infinity go out as JSON's NaN / Infinity literals
        if image is not None:
            (folder / "data" / split / "000000.png").write_bytes(image)
    return setup


def box(index: int, value: float) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        data["annotations"][0]["bbox"][index] = value
    return mutate


def image_entry(**fields) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        for key, value in fields.items():
            if value is None:
                data["images"][0].pop(key, None)
            else:
                data["images"][0][key] = value
    return mutate


def png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(out, format="PNG")
    return out.getvalue()


# ------------------------------------------------------------------------------ the table

CANARY = "__import__('os').system('touch {marker}')"
# issue 21: code after a newline, in stored text that reaches an exported module (runs when it is imported,
# from the case's folder: MARKER is relative, so it fits in a folder's name too)
PLANT = "AO\n}\n__import__('os').system('touch MARKER')\nGENOTYPES = {\n#"
PLANTS = {"newline code": PLANT, "docstring close": 'x"""\n__import__("os").system("touch MARKER")\n"""',
          "named escape": "dimp\\N", "backslash and quotes": "a\\'\"b\\"}


def cell_run(name: str = "cellrun", metric: str = "AO", ranking: str = "proxy", tracker: str = "dimp_small",
             origin: str = "random") -> Callable[[Path], None]:
    """A cell search's store in FOLDER/NAME: the hand neck and one searched cell, each with a ranking result."""
    def setup(folder: Path) -> None:
        import random

        from autoloss.cell.representation import CellRepresentation
        from autoloss.engine.store import BASELINE_GENERATION, RunStore

        rep = CellRepresentation()
        (folder / name).mkdir()
        with RunStore(folder / name / "run.sqlite") as db:
            db.save_config({"representation": "cell", "metric": metric, "ranking": ranking,
                            "task": {"tracker": tracker}})
            base = db.add_candidate(BASELINE_GENERATION, 0, "hand", origin="baseline")
            db.add_verdict(base, ranking, True, "ok", {"fitness": 0.4})
            cid = db.add_candidate(0, 0, rep.key(rep.random(random.Random(0))), origin=origin)
            db.add_verdict(cid, ranking, True, "ok", {"fitness": 0.5})
    return setup


def renamed_run(name: str) -> Callable[[Path], None]:
    """The copied tiny run moved to FOLDER/NAME (a run folder whose name holds anything a name may)."""
    def setup(folder: Path) -> None:
        (folder / "run").rename(folder / name)
    return setup


def imports(module: str) -> Callable[[Path], None]:
    """Run FOLDER/MODULE as an import does, in a fresh interpreter from FOLDER (planted code would run)."""
    def after(folder: Path) -> None:
        if (folder / module).is_file():
            subprocess.run([sys.executable, "-c", f"import runpy; runpy.run_path({str(folder / module)!r})"],
                           cwd=folder, capture_output=True, timeout=300)
    return after


def user_files(*paths: str) -> Callable[[Path], None]:
    """A user's own files (images, annotations) where a demo would write its data."""
    def setup(folder: Path) -> None:
        for path in paths:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(b"the user's " + path.encode())
    return setup


def sql_text(text: str) -> str:
    """``text`` as an SQL string literal inside a store() statement (its braces kept from str.format)."""
    return "'" + text.replace("'", "''").replace("{", "{{").replace("}", "}}") + "'"


LONG = "x" * 300  # a path component over 255 bytes
USER_DATA = ("proj/data/annotations/instances_train.json", "proj/data/train/000000.png")
TRACKER_DATA = ("proj/data/weights/list.txt", "proj/data/weights/seq1/00000001.jpg")
EXPORT = ["--include-worse", "--include-unconfirmed"]
CASES: list[Case] = [
    # controls: the harness itself works
    Case("controls", "check CEI", ["check", "CEI"], expect=(0,)),
    Case("controls", "check a space file", ["check", "CEI", "--space", "{tmp}/ok.yaml"],
         setup=space("ok.yaml", lambda t: t), expect=(0,)),

    # hostile expressions
    Case("expressions", "python call", ["check", CANARY]),
    Case("expressions", "eval in a name", ["check", "Neg(eval('__import__(\"os\")'))"]),
    Case("expressions", "lambda", ["check", "(lambda: __import__('os').system('touch {marker}'))()"]),
    Case("expressions", "dunder name", ["check", "Neg(__class__)"]),
    Case("expressions", "attribute access", ["check", "X.__class__"]),
    Case("expressions", "unicode digits", ["check", "Neg(Dot(Y,Mul(０２,Log(Softmax(X)))))"]),
    Case("expressions", "hex constant", ["check", "Neg(Dot(Y,Mul(0x2,Log(Softmax(X)))))"]),
    Case("expressions", "19,000-digit constant", ["check", "Neg(Dot(Y,Mul(" + "9" * 19_000 + ",Log(Softmax(X)))))"]),
    Case("expressions", "deep nesting", ["check", "Neg(" * 5000 + "X" + ")" * 5000]),
    Case("expressions", "NUL byte", ["check", "Neg(Dot(Y,Log(Softmax(X))))\x01"]),
    Case("expressions", "newline and junk", ["check", "CEI\nrm -rf /"]),
    Case("expressions", "empty", ["check", ""]),
    Case("expressions", "export of a canary", ["export", "--expression", CANARY, "--out", "{tmp}/m.py"]),

    # malformed search spaces
    Case("spaces", "billion laughs", ["check", "CEI", "--space", "{tmp}/s.yaml"], setup=space("s.yaml", laughs)),
    Case("spaces", "100,000-level flow list", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=space("s.yaml", lambda t: t + "x: " + "[" * 100_000 + "]" * 100_000 + "\n")),
    Case("spaces", "60 MB file", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=space("s.yaml", lambda t: t + ("# " + "x" * 1000 + "\n") * 60_000)),
    Case("spaces", "binary file", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=write("s.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))),
    Case("spaces", "latin-1 file", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=space("s.yaml", lambda t: t.replace("Multi-class", "Multi-cl\xe9ss").encode("latin-1"))),
    Case("spaces", "/proc/self/mem", ["check", "CEI", "--space", "/proc/self/mem"]),
    Case("spaces", "/dev/zero", ["check", "CEI", "--space", "/dev/zero"]),
    Case("spaces", "a directory", ["check", "CEI", "--space", "{tmp}"]),
    Case("spaces", "python object tag", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=lambda f: write("s.yaml", f"!!python/object/apply:os.system ['touch {f / 'MARKER'}']\n")(f)),
    Case("spaces", "python tag inside a space", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=lambda f: write("s.yaml", space_text().replace(
             "name: cls_softmax", f"name: !!python/object/apply:os.system ['touch {f / 'MARKER'}']"))(f)),
    Case("spaces", "duplicate key", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=space("s.yaml", lambda t: t + "name: again\n")),
    Case("spaces", "second iou input (search)", [*TASK, "--space", "{tmp}/s.yaml", "--out", "{tmp}/out"],
         setup=space("s.yaml", lambda t: t.replace("  W: {role: iou", "  V: {role: iou, shape: column}\n  W: {role: iou"))),
    Case("spaces", "dunder input name", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=space("s.yaml", lambda t: t.replace("  W: {role: iou", "  __class__: {role: iou"))),
    Case("spaces", "operator as input name", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=space("s.yaml", lambda t: t.replace("  W: {role: iou", "  Exp: {role: iou"))),
    Case("spaces", "unclosed flow (multi-line YAML error)", ["check", "CEI", "--space", "{tmp}/s.yaml"],
         setup=write("s.yaml", "name: [unclosed\nmode: : :\n")),
    Case("spaces", "initial loss does not parse (search)", [*TASK, "--space", "{tmp}/s.yaml", "--out", "{tmp}/out"],
         setup=space("s.yaml", lambda t: t.replace("CEI: Neg(Dot(Mul(Y,W),Log(Softmax(X))))", "CEI: Neg(Dot(Y,Q))"))),

    # options
    *[Case("options", f"check --timeout {v}", ["check", "CEI", "--timeout", v]) for v in ("0", "-1", "nan", "inf", "1e309")],
    Case("options", "--mos-timeout 0", [*TASK, "--mos-timeout", "0", "--out", "{tmp}/out"]),
    Case("options", "--proxy-timeout nan", [*TASK, "--proxy-timeout", "nan", "--out", "{tmp}/out"]),
    *[Case("options", f"--workers {v}", [*TASK, "--workers", v, "--out", "{tmp}/out"]) for v in ("-1", "0", "100000")],
    Case("options", "--top-k 50 --population 6",
         ["search", "--task", "noisy-digits", "--population", "6", "--top-k", "50", "--generations", "1",
          "--steps", "5", "--quiet", "--out", "{tmp}/out"]),
    Case("options", "--max-mos 0", [*TASK, "--max-mos", "0", "--out", "{tmp}/out"]),
    Case("options", "--mos-margin nan", [*TASK, "--mos-margin", "nan", "--out", "{tmp}/out"]),
    Case("options", "--mos-threshold best", [*TASK, "--mos-threshold", "best", "--out", "{tmp}/out"]),
    *[Case("options", f"--mos-quantile {v}", [*TASK, "--mos-quantile", v, "--out", "{tmp}/out"])
      for v in ("1", "-0.1", "nan")],
    Case("options", "--no-distinct with vanilla", [*TASK, "--strategy", "vanilla", "--no-distinct", "--out", "{tmp}/out"]),
    Case("options", "--seed 2**80", [*TASK, "--seed", "1208925819614629174706176", "--out", "{tmp}/out"]),

    # unusable --out paths
    Case("out", "search --out a regular file", [*TASK, "--out", "{tmp}/file"], setup=write("file", "x")),
    Case("out", "search --out under a regular file", [*TASK, "--out", "{tmp}/file/run"], setup=write("file", "x")),
    Case("out", "search --out /dev/null", [*TASK, "--out", "/dev/null"]),
    Case("out", "search --out /proc/x", [*TASK, "--out", "/proc/x"]),
    Case("out", "report --out a regular file", ["report", "{run}", "--out", "{tmp}/file"],
         setup=write("file", "x"), needs=("run",)),

    # damaged and tampered stores
    *[Case("stores", f"{command} on a {what} store", args, setup=setup, needs=("run",))
      for what, setup in (("truncated", store(truncate=6000)), ("zero-byte", store(zero=True)),
                          ("page-damaged", store(damage_page=1)),
                          ("config-not-JSON", store(sql="update config set value = 'not json{{';")))
      for command, args in (("resume", [*TASK, "--resume", "--out", "{run}"]), ("report", ["report", "{run}"]),
                            ("export", ["export", "{run}", "--out", "{tmp}/m.py"]))],
    *[Case("stores", f"{command} with a stored detector config that runs code", args,
           setup=combine(evil_config, store(sql="update config set value = json_set(value, '$.detector', "
                                                "'{tmp}/evil_cfg.py');")),
           expect=(0, 2), needs=("run",))  # the stored path may be shown, never executed
      for command, args in (("export", ["export", "{run}", "--out", "{tmp}/m.py"]), ("report", ["report", "{run}"]))],
    Case("stores", "resume with a tampered genotype", [*TASK, "--resume", "--out", "{run}"],
         setup=store(sql="update candidates set genotype = 'Neg(' || genotype;"), needs=("run",)),
    Case("stores", "report with a canary genotype", ["report", "{run}"],
         setup=store(sql="update candidates set genotype = '" + CANARY.replace("'", "''") + "';"),
         expect=(0, 2), needs=("run",)),  # shown as text or refused, never run

    # issue 21, point 1: stored text reaches an exported module only as data (the module imports, nothing runs)
    *[Case("generated source", f"cell export: {field} holds {kind}", ["export", "{tmp}/cellrun", *EXPORT, "--out",
                                                                      "{tmp}/m.py"],
           setup=cell_run(**{field: text}), expect=(0,), after=imports("m.py"), timeout=120)
      for field in ("metric", "ranking", "tracker", "origin") for kind, text in PLANTS.items()],
    *[Case("generated source", f"cell export: the run folder's name holds {kind}",
           ["export", "{tmp}/" + text.replace("/", "_"), *EXPORT, "--out", "{tmp}/m.py"],
           setup=cell_run(name=text.replace("/", "_")), expect=(0,), after=imports("m.py"), timeout=120)
      for kind, text in PLANTS.items()],
    Case("generated source", "cell export: a Unicode run folder (default module name)",
         ["export", "{tmp}/zählung_é", *EXPORT], setup=cell_run(name="zählung_é"), expect=(0,),
         after=imports("zählung_é/export/autoloss_cells_z_hlung.py"), timeout=120),
    *[Case("generated source", f"loss export: the metric holds {kind}", ["export", "{run}", *EXPORT, "--out", "{tmp}/m.py"],
           setup=store(sql=f"update config set value = json_set(value, '$.metric', {sql_text(text)});"
                           f"update candidates set origin = {sql_text(text)};"),
           expect=(0,), needs=("run",), after=imports("m.py"), timeout=180)
      for kind, text in PLANTS.items()],
    *[Case("generated source", f"loss export: the run folder's name holds {kind}",
           ["export", "{tmp}/" + text.replace("/", "_"), *EXPORT, "--out", "{tmp}/m.py"],
           setup=renamed_run(text.replace("/", "_")), expect=(0,), needs=("run",), after=imports("m.py"), timeout=180)
      for kind, text in PLANTS.items()],

    # issue 21, point 2: a demo never deletes or overwrites a user's files in OUT/data
    Case("demo data", "detector --demo into a folder of the user's images and annotations",
         ["search", "--detector", "faster_rcnn", "--demo", "--quiet", "--out", "{tmp}/proj"],
         setup=user_files(*USER_DATA), keep=USER_DATA, timeout=120),
    Case("demo data", "tracker --demo into a folder of the user's sequences",
         ["search", "--tracker", "dimp_small", "--demo", "--quiet", "--out", "{tmp}/proj"],
         setup=user_files(*TRACKER_DATA), keep=TRACKER_DATA, timeout=120),

    # issue 21, point 6: every row read is checked (types, finiteness)
    *[Case("stores", f"{command} with {what}", args, setup=store(sql=sql), needs=("run",))
      for what, sql in (
          ("candidates.generation 'zero'", "update candidates set generation = 'zero' where id = (select max(id) from candidates);"),
          ("verdicts.created 'yesterday'", "update verdicts set created = 'yesterday';"),
          ("verdicts.seconds 'long'", "update verdicts set seconds = 'long';"),
          ("a non-numeric proxy fitness", "update verdicts set metrics = json_set(metrics, '$.fitness', 'abc') where gate = 'proxy';"),
          ("a verdict seed 'abc'", "update verdicts set metrics = json_set(metrics, '$.seed', 'abc');"),
          ("a fitness of Infinity", "update verdicts set metrics = '{{\"fitness\": Infinity}}' where gate = 'proxy';"),
          ("no generations table", "drop table generations;"))
      for command, args in (("resume", [*TASK, "--resume", "--out", "{run}"]), ("report", ["report", "{run}"]),
                            ("export", ["export", "{run}", "--out", "{tmp}/m.py"]))],
    Case("stores", "resume with an engine state that is not JSON", [*TASK, "--resume", "--out", "{run}"],
         setup=store(sql="insert or replace into state (key, value) values ('strategy', 'not json {{');"), needs=("run",)),

    # issue 21, point 7: odd paths, read-only media
    Case("paths", "search --out with a 300-byte name", [*TASK, "--out", "{tmp}/" + LONG]),
    Case("paths", "report --out with a 300-byte name", ["report", "{run}", "--out", "{tmp}/" + LONG], needs=("run",)),
    Case("paths", "export --out with a 300-byte name", ["export", "{run}", *EXPORT, "--out", "{tmp}/" + LONG + ".py"],
         needs=("run",)),
    Case("paths", "export --out under a 300-byte folder", ["export", "{run}", *EXPORT, "--out", "{tmp}/" + LONG + "/m.py"],
         needs=("run",)),
    Case("paths", "report of a 300-byte run path", ["report", "{tmp}/" + LONG]),
    Case("paths", "report of a finished run on read-only media", ["report", "{run}", "--out", "{tmp}/report"],
         needs=("run",), readonly="run", expect=(0,)),
    Case("paths", "export of a finished run on read-only media", ["export", "{run}", *EXPORT, "--out", "{tmp}/m.py"],
         needs=("run",), readonly="run", expect=(0,)),
    Case("paths", "export --out into a read-only folder", ["export", "{run}", *EXPORT, "--out", "{tmp}/shelf/m.py"],
         setup=lambda f: (f / "shelf").mkdir(), needs=("run",), readonly="shelf"),

    # broken COCO datasets (refused before any training)
    *[Case("coco", name, [*DETECTOR, "--data", "{data}", "--out", "{tmp}/out"], setup=setup, needs=("data",))
      for name, setup in (
          ("negative box width", coco(box(2, -4))), ("zero box height", coco(box(3, 0))),
          ("NaN coordinate", coco(box(0, float("nan")))), ("infinite coordinate", coco(box(1, float("inf")))),
          ("box outside the image", coco(box(0, 10_000))),
          ("1 x 1 image", coco(image_entry(width=1, height=1), png(1, 1))),
          ("undecodable image", coco(image=b"not an image at all")),
          ("image without width/height", coco(image_entry(width=None, height=None))),
          ("declared size differs from the file", coco(image=png(64, 48))),
          ("NaN in the val split", coco(box(0, float("nan")), split="val")),
          ("annotation file not JSON", write("data/annotations/instances_train.json", "{\"images\": [")),
      )],
]



# ------------------------------------------------------------------------------ issue 21: the tracker side
# (points 4, 5, 8, 9: hostile tracking data, --tracker-option and differentiable ranges, failures that
# exited 0, echoed inputs, Unicode digits). Each case writes its own small GOT-10k-layout set.

TRACKER_TINY = {"channels": 8, "crop_size": 64, "baseline_steps": 3, "baseline_batch": 1, "steps": 4, "batch": 2,
                "pool": 2, "track_iterations": 3, "init_shifts": 1, "weights_sequences": 2, "holdout_sequences": 2,
                "test_sequences": 2, "verify_sequences": 2, "sequence_frames": 6, "frame_size": 64,
                "mos_steps": 2, "mos_sequences": 1}
TRACKER_OPTIONS = [a for k, v in TRACKER_TINY.items() for a in ("--tracker-option", f"{k}={v}")]
TRACKER = ["search", "--tracker", "dimp_small", *TRACKER_OPTIONS, "--quiet"]
DARTS = ["search", "--tracker", "dimp_small", "--demo", *TRACKER_OPTIONS, "--strategy", "darts", "--epochs", "2",
         "--seeds", "1", "--steps-per-epoch", "2", "--holdout-batches", "2", "--warmup", "0", "--workers", "1", "--quiet"]
GENOTYPE = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)])")


def tracking(damage: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """FOLDER/data: four roles of 2 sequences of 6 frames (64 px), then ``damage(FOLDER/data)``."""
    def setup(folder: Path) -> None:
        from autoloss.tracking.synthetic import generate_dataset

        generate_dataset(folder / "data", {"weights": 2, "architecture": 2, "holdout": 2, "verify": 2, "test": 2},
                         6, 64, 0)
        if damage is not None:
            damage(folder / "data")
    return setup


def png_claiming(width: int, height: int) -> bytes:
    """A real 8 x 8 PNG whose header (CRC fixed) claims ``width`` x ``height`` pixels."""
    import struct
    import zlib

    data = bytearray(png(8, 8))
    header = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header) & 0xFFFFFFFF)
    return bytes(data)


def sequences(data: Path, role: str = "weights") -> list[Path]:
    return [data / role / name for name in (data / role / "list.txt").read_text().split()]


def frame_bomb(side: int) -> Callable[[Path], None]:
    def damage(data: Path) -> None:
        (sequences(data)[0] / "00000002.jpg").write_bytes(png_claiming(side, side))
    return damage


def one_frame_each(data: Path) -> None:
    for role in ("weights", "verify", "holdout", "test"):
        for sequence in sequences(data, role):
            for frame in sorted(sequence.glob("0*.jpg"))[1:]:
                frame.unlink()
            for label in ("groundtruth.txt", "cover.label", "absence.label", "cut_by_image.label"):
                if (sequence / label).exists():
                    (sequence / label).write_text((sequence / label).read_text().splitlines()[0] + "\n")


def hidden_after_first(data: Path) -> None:
    for sequence in sequences(data):
        count = len(list(sequence.glob("0*.jpg")))
        (sequence / "cover.label").write_text("\n".join(["8"] + ["0"] * (count - 1)) + "\n")
        (sequence / "absence.label").write_text("\n".join(["0"] + ["1"] * (count - 1)) + "\n")


def huge_box(data: Path) -> None:
    groundtruth = sequences(data)[0] / "groundtruth.txt"
    lines = groundtruth.read_text().splitlines()
    groundtruth.write_text("\n".join([lines[0], "1e308,1e308,1e308,1e308", *lines[2:]]) + "\n")


def pickle_checkpoint(folder: Path) -> None:
    """A protocol-4 pickle that would touch MARKER if unpickled, as a backbone checkpoint."""
    import pickle

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {folder / 'MARKER'}",))

    (folder / "evil.pth").write_bytes(pickle.dumps(Planted(), protocol=4))


def tampered_cell_run(folder: Path) -> None:
    """A cell run whose best found cell does not parse (for evaluate --run)."""
    from autoloss.engine.store import BASELINE_GENERATION, RunStore

    (folder / "cellrun").mkdir()
    with RunStore(folder / "cellrun" / "run.sqlite") as db:
        db.save_config({"representation": "cell", "metric": "AO", "ranking": "proxy", "task": {"tracker": "dimp_small"}})
        base = db.add_candidate(BASELINE_GENERATION, 0, "hand", origin="baseline")
        db.add_verdict(base, "proxy", True, "ok", {"fitness": 0.4})
        cid = db.add_candidate(0, 0, "Genotype(normal=[('sep_conv_9x9', 0)])", origin="tampered")
        db.add_verdict(cid, "proxy", True, "ok", {"fitness": 0.5})


CASES += [
    # hostile GOT-10k-layout data: one line before anything is written
    *[Case("tracking-data", name, [*TRACKER, "--data", "{tmp}/data", "--out", "{tmp}/out"], setup=tracking(damage))
      for name, damage in (("30000 x 30000 PNG header", frame_bomb(30000)),
                           ("10000 x 10000 PNG header (PIL warns)", frame_bomb(10000)),
                           ("every sequence one frame", one_frame_each),
                           ("target visible in one frame only", hidden_after_first),
                           ("1e308 box", huge_box))],
    Case("tracking-data", "pickle as --backbone-checkpoint",
         [*TRACKER, "--data", "{tmp}/data", "--backbone-checkpoint", "{tmp}/evil.pth", "--out", "{tmp}/out"],
         setup=combine(tracking(), pickle_checkpoint)),
    # --tracker-option ranges and the memory estimate
    *[Case("tracker-options", option, ["search", "--tracker", "dimp_small", "--demo", "--tracker-option", option,
                                       "--out", "{tmp}/out", "--quiet"])
      for option in ("crop_size=0", "baseline_lr=-1", "data_seed=-1", "seed=1180591620717411303424", "filter_size=99",
                     "frames=1000", "baseline_batch=100000", "baseline_batch=4000", "sigma_factor=0",
                     "track_iterations=-1", "max_gap=0", "depth=7", "frame_size=0", "sequence_frames=1",
                     "mos_steps=0", "lr=nan")],
    # differentiable options and failures that exited 0 (expected now: exit 1 with the reason)
    *[Case("darts", f"{flag} {value}", ["search", "--tracker", "dimp_small", "--demo", "--strategy", strategy, flag,
                                       value, "--out", "{tmp}/out", "--quiet"])
      for strategy, flag, value in (("ms-darts", "--ms-h", "1e-300"), ("ms-darts", "--ms-temperature", "1e-300"),
                                    ("darts", "--weight-lr", "1e9"), ("darts2", "--holdout-batches", "1000000"))],
    Case("darts", "every epoch timed out (exit 1)", [*DARTS, "--epoch-timeout", "0.01", "--out", "{tmp}/out"],
         expect=(1,), timeout=300),
    Case("darts", "alpha NaN: --weight-lr 10 --arch-lr 10 (exit 1)",
         [*DARTS, "--weight-lr", "10", "--arch-lr", "10", "--out", "{tmp}/out"], expect=(1,), timeout=300),
    # genotypes and echoed inputs
    Case("genotypes", "normal_concat=range(2, 999999)",
         ["evaluate", "--tracker", "dimp_small", "--demo", "--cell", GENOTYPE[:-1] + ", normal_concat=range(2, 999999))",
          "--out", "{tmp}/out"]),
    Case("genotypes", "Arabic-Indic digit one (U+0661)",
         ["evaluate", "--tracker", "dimp_small", "--demo", "--cell", GENOTYPE.replace("'sep_conv_3x3', 1", "'sep_conv_3x3', \u0661", 1),
          "--out", "{tmp}/out"]),
    Case("genotypes", "evaluate --run with a found cell that does not parse",
         ["evaluate", "--tracker", "dimp_small", "--data", "{tmp}/data", "--run", "{tmp}/cellrun", *TRACKER_OPTIONS,
          "--out", "{tmp}/out", "--quiet"], setup=combine(tracking(), tampered_cell_run)),
    Case("genotypes", "a 100,000-character --strategy", ["search", "--strategy", "x" * 100_000]),
]

# ------------------------------------------------------------------------------ running


def fill(text: str, folder: Path) -> str:
    return (text.replace("{tmp}", str(folder)).replace("{marker}", str(folder / "MARKER"))
            .replace("{run}", str(folder / "run")).replace("{data}", str(folder / "data")))


def classify(case: Case, code: int | None, stderr: str, executed: bool, lost: bool = False) -> str:
    if executed:
        return "executed"
    if lost:
        return "lost"
    if code is None:
        return "hang"
    if "Traceback" in stderr:
        return "traceback"
    if code in case.expect:
        lines = stderr.strip().splitlines()
        if code == 0 or (len(lines) == 1 and lines[0].startswith("autoloss: error:")):
            return "clean"
        return "unclear"
    return "accepted" if code == 0 else "unclear"


def run_case(case: Case, command: list[str], root: Path, shared: dict[str, Path]) -> Result:
    folder = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    for need in case.needs:
        shutil.copytree(shared[need], folder / need)
    if case.setup is not None:
        case.setup(folder)
    argv = command + [fill(a, folder) for a in case.args]
    if case.readonly is not None:
        mount = shlex.quote(str(folder / case.readonly))
        argv = ["unshare", "-rm", "sh", "-c",
                f"mount --bind -o ro {mount} {mount} && exec {' '.join(shlex.quote(a) for a in argv)}"]
    kept = {name: (folder / name).read_bytes() for name in case.keep}
    limit = int(case.memory_gb * (1 << 30))

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.setsid()  # its own process group, so a timeout ends its workers too

    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", preexec_fn=limits)
    try:
        _, stderr = proc.communicate(timeout=case.timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        _, stderr = proc.communicate()
        code = None
    seconds = time.perf_counter() - start
    if case.after is not None and code is not None:
        case.after(folder)
    executed = (folder / "MARKER").exists()
    lost = any(not (folder / name).is_file() or (folder / name).read_bytes() != data for name, data in kept.items())
    outcome = classify(case, code, stderr, executed, lost)
    shown = [a if len(a) <= 80 else a[:77] + "..." for a in argv]
    return Result(case.group, case.name, outcome, code, round(seconds, 1), stderr.strip()[-600:], shown)


def prepare_shared(root: Path, command: list[str], cases: list[Case]) -> dict[str, Path]:
    """The finished tiny run and the small COCO set that cases copy, made once."""
    shared = {}
    needs = {need for case in cases for need in case.needs}
    if "run" in needs:
        run = root / "shared-run"
        result = subprocess.run(command + [*TASK, "--out", str(run)], capture_output=True, text=True, timeout=600)
        if result.returncode != 0 or not (run / "run.sqlite").is_file():
            sys.exit(f"probe: could not make the tiny run the store cases copy:\n{result.stderr[-2000:]}")
        shared["run"] = run
    if "data" in needs:
        from autoloss.detection.synthetic import make_synthetic_coco

        make_synthetic_coco(root / "shared-data", num_train=8, num_val=4)
        shared["data"] = root / "shared-data"
    return shared


def summary(results: list[Result]) -> dict:
    counts = Counter(r.outcome for r in results)
    return {"tried": len(results), **{outcome: counts.get(outcome, 0) for outcome in OUTCOMES}}


def markdown(results: list[Result]) -> str:
    counts = summary(results)
    lines = ["| tried | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 1) + "|",
             "| " + " | ".join(str(counts[k]) for k in ("tried", *OUTCOMES)) + " |", "",
             "| group | case | outcome | exit | seconds |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.group} | {r.name.replace('|', '/')} | {r.outcome} | "
                     f"{'-' if r.exit_code is None else r.exit_code} | {r.seconds} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="GROUP",
                        help=f"run only this group (repeatable): {', '.join(dict.fromkeys(c.group for c in CASES))}")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="OUT", help="write the counts and the table as Markdown")
    parser.add_argument("--command", default="autoloss",
                        help="the command to probe (default: autoloss on PATH; e.g. 'python -m autoloss.cli')")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default: 2)")
    args = parser.parse_args(argv)

    groups = set(args.only or [])
    unknown = groups - {c.group for c in CASES}
    if unknown:
        parser.error(f"unknown group(s) {', '.join(sorted(unknown))}")
    cases = [c for c in CASES if not groups or c.group in groups]
    if args.list:
        for case in cases:
            print(f"{case.group:12s} {case.name}")
        return 0
    command = args.command.split()
    if shutil.which(command[0]) is None:
        sys.exit(f"probe: {command[0]} not found on PATH")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autoloss-probe-") as tmp:
        root = Path(tmp)
        shared = prepare_shared(root, command, cases)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(lambda c: run_case(c, command, root, shared), cases))
    counts = summary(results)
    print(" / ".join(f"{k} {v}" for k, v in counts.items()) + f"  ({time.perf_counter() - start:.0f} s)")
    failing = [r for r in results if r.outcome != "clean"]
    for r in failing:
        last = r.stderr_tail.splitlines()[-1] if r.stderr_tail else ""
        print(f"  {r.outcome:9s} {r.group}: {r.name} (exit {r.exit_code}, {r.seconds} s) {last[:160]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": counts, "results": [asdict(r) for r in results]},
                                              indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(results))
    return 0 if not failing else 1


if __name__ == "__main__":
    sys.exit(main())
