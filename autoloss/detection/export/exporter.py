"""Exporting losses: from a run or one expression to a module file and its config fragment.

:func:`export_run` takes the best proxy-evaluated losses of a search run, :func:`export_expression`
one expression (or ready loss name) of a search space; both name the losses, write the module
(:mod:`autoloss.detection.export.module`) and, beside it, ``<module>_config.py``
(:mod:`autoloss.detection.export.snippet`), and return an :class:`Export` saying what they wrote.
"""

from __future__ import annotations

import ast
import os
import re
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoloss.engine.runs import beating_baseline
from autoloss.errors import UserError
from autoloss.files import output_file, write_atomic
from autoloss.detection.export.module import ExportedLoss, module_source
from autoloss.detection.export.run import RunLosses, Scored, read_run
from autoloss.detection.export.snippet import Placement, config_snippet, default_placement, detector_placement
from autoloss.loss.expression import parse, to_infix
from autoloss.loss.space import SearchSpace, load_space
from autoloss.source_text import SHADOWED, ascii_label, literal, mention, module_name  # noqa: F401  (re-exported)

BRANCH_WORDS = {"cls": "Cls", "reg": "Reg"}


@dataclass(frozen=True)
class Export:
    """What an export wrote."""

    module_path: Path
    config_path: Path
    snippet: str
    losses: list[ExportedLoss]
    notes: list[str] = field(default_factory=list)

    @property
    def module_name(self) -> str:
        return self.module_path.stem


# ------------------------------------------------------------------------------------------------ names


def camel(text: str) -> str:
    """``'demo-faster_rcnn'`` -> ``'DemoFasterRcnn'``, ``'CSE-Autoloss-A'`` -> ``'CSEAutolossA'``."""
    return "".join(part[0].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", text) if part)


def snake(text: str) -> str:
    """``'CSE-Autoloss-A'`` -> ``'cse_autoloss_a'``."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", text)
    return "_".join(w.lower() for w in words)


def class_prefix(name: str) -> str:
    """The CamelCase start of the class names for a user's ``--name``."""
    prefix = re.sub(r"(Cls|Reg)?(Loss)?$", "", camel(name))
    if not prefix or not prefix[0].isalpha():
        raise UserError(f"--name {name!r}: class names are made from it, so it must start with a letter")
    return prefix


def module_name_for(path: Path) -> str:
    """The import name of a module file, checked (:func:`autoloss.source_text.module_name`, the rule of
    every exporter): a Python identifier that hides no other module."""
    return module_name(path)


# ------------------------------------------------------------------------------------------------ from a run


def export_run(run_dir, top: int = 1, out=None, name: str | None = None,
               detector: str | None = None, include_worse: bool = False, include_unconfirmed: bool = False) -> Export:
    """Export the ``top`` best proxy-evaluated losses of a run into one module (default
    ``RUN_DIR/export/autoloss_<run name>.py``) and write its config fragment beside it.

    Only losses that beat the baseline on the proxy are exported, unless ``include_worse``; with it,
    each one that does not beat it says so in its docstring and in the notes.
    """
    run = read_run(run_dir, top)
    base = run.baseline.fitness if run.baseline is not None and not run.only_baseline else None
    kept, left_out = beating_baseline(run.best, lambda item: item.fitness, base, include_worse, ("loss", "losses"),
                                      run.run_dir, f"proxy {run.metric}", claim=lambda item: run.claims.get(
                                          item.candidate.id), include_unconfirmed=include_unconfirmed)
    run = replace(run, best=kept, notes=run.notes + left_out)
    run_label = ascii_label(run.name)
    out = Path(out) if out else run.run_dir / "export" / f"autoloss_{run_label}.py"
    module_name = module_name_for(out)
    prefix = class_prefix(name) if name else "AutolossRun" + (camel(run.name) or "Search")
    losses = [_run_loss(run, item, rank, prefix) for rank, item in enumerate(run.best, 1)]
    notes = list(run.notes)
    stored = run.detector
    if detector is None and stored is not None and not _bundled(stored):
        # A run directory may come from anyone, and an MMDetection config is Python: a stored path is
        # shown, never read, unless the user names it again.
        notes.append(f"the run's detector config {stored} is not read (a config file is code): the fragment "
                     f"assumes a {'one' if any(l.space.mode == 'sigmoid' for l in losses) else 'two'}-stage head; "
                     f"pass --detector {stored} to place the losses for it")
        stored = None
    try:
        placement = _placement(detector or stored, losses)
    except UserError as exc:
        if detector:
            raise
        raise UserError(f"{exc} (the run's detector; pass --detector to choose another)") from None
    snippet = config_snippet(module_name, losses[:1], losses[1:], placement)
    docstring = _run_docstring(run, losses, module_name, snippet)
    return _write(out, losses, docstring, snippet, notes, _provenance(run))


def _provenance(run: RunLosses) -> dict:
    """Where the losses come from, as the module's ``RUN`` data (each value read back exactly)."""
    task = run.config.get("task") if isinstance(run.config.get("task"), dict) else {}
    found = {"run": run.name, "run_dir": str(run.run_dir.resolve()), "metric": run.metric,
             "space": run.space.name, "detector": run.detector, "task": run.config.get("task_name"),
             "branch": task.get("branch", run.space.branch)}
    return {key: value for key, value in found.items() if isinstance(value, str)}


def _run_loss(run: RunLosses, item: Scored, rank: int, prefix: str) -> ExportedLoss:
    branch = run.space.branch
    baseline = item.candidate.generation < 0
    tag = "Baseline" if baseline else f"Rank{rank}"
    score = _score(run, item)
    if baseline:
        title = f"The baseline (initial loss) of autoloss run {literal(run.name)}: {score}."
    else:
        title = f"Rank {rank} of autoloss run {literal(run.name)}: {score}."
    candidate = item.candidate
    details = [
        f"Candidate {candidate.id}: "
        + ("the baseline" if baseline else f"generation {candidate.generation + 1} of the search") + f", index {candidate.index}, "
        f"origin {mention(candidate.origin or 'unknown')}; {_metrics(run, item)}.",
        f"Run: {mention(run.run_dir.resolve())} ({_settings(run)}).",
    ]
    return ExportedLoss(item.node, run.space, f"{prefix}{tag}{BRANCH_WORDS[branch]}Loss",
                        f"{tag.lower()}_{branch}_loss", title, tuple(details))


def _score(run: RunLosses, item: Scored) -> str:
    text = f"proxy {mention(run.metric)} {item.fitness:.4f}"
    if run.baseline is not None and item.candidate.id != run.baseline.candidate.id:
        delta = item.fitness - run.baseline.fitness
        text += f" (baseline {run.baseline.fitness:.4f}, {delta:+.4f})"
        if delta <= 0:
            text += "; WORSE THAN THE BASELINE: the search did not find it better than the initial loss"
        claim = run.claims.get(item.candidate.id)
        if claim is not None and claim.better:
            text += f"; confirmed {claim.text()}"
        else:
            said = claim.text() if claim is not None and claim.candidate.n else "one seed, never retrained"
            text += f"; UNCONFIRMED: {said}"
    return text


def _metrics(run: RunLosses, item: Scored) -> str:
    metrics = item.proxy.metrics
    parts = [f"proxy {mention(run.metric)} {item.fitness:.4f}"]
    extra = [f"{k} {metrics[k]:.4f}" for k in ("mAP_50", "mAP_75") if isinstance(metrics.get(k), (int, float))]
    if extra:
        parts[0] += f" ({', '.join(extra)})"
    if isinstance(metrics.get("iters"), int):
        parts[0] += f" after {metrics['iters']} iterations"
    mos = item.mos.metrics.get("fitness") if item.mos and item.mos.status == "ok" else None
    if isinstance(mos, (int, float)):
        parts.append(f"MOS {mention(run.metric)} {mos:.4f}")
    return ", ".join(parts)


def _settings(run: RunLosses) -> str:
    search = run.config.get("search") if isinstance(run.config.get("search"), dict) else {}
    task = run.config.get("task") if isinstance(run.config.get("task"), dict) else {}
    where = f"detector {mention(run.detector)}" if run.detector else \
        f"task {mention(run.config.get('task_name', 'unknown'))}"
    words = [where, f"branch {mention(task.get('branch', run.space.branch))}", f"space {mention(run.space.name)}"]
    words += [f"{key} {mention(search[key])}" for key in ("strategy", "seed") if key in search]
    return ", ".join(words)


def _run_docstring(run: RunLosses, losses: list[ExportedLoss], module_name: str, snippet: str) -> str:
    intro = (f"Run {literal(run.name)} in {mention(run.run_dir.resolve())} ({_settings(run)}). Exported by `autoloss "
             "export`; the module needs only torch and mmdet, so it can be copied anywhere importable. "
             "Regenerate it rather than edit it.")
    listing = []
    for loss, item in zip(losses, run.best):
        listing += [f"{loss.class_name}: {_score(run, item)}", *formula_lines(to_infix(loss.node)), ""]
    header = "Losses found by an autoloss search, as MMDetection loss modules."
    if run.only_baseline:
        header = "The baseline loss of an autoloss search (no other loss finished), as an MMDetection loss module."
    return "\n".join([
        header, "", *textwrap.wrap(intro, width=96, break_on_hyphens=False), "",
        "Losses, best first:" if len(losses) > 1 else "Loss:", "", *listing,
        *_usage(module_name, snippet),
    ])


# ------------------------------------------------------------------------------------------------ one expression


def export_expression(expression: str, space: str | SearchSpace = "cls_softmax", out=None,
                      name: str | None = None, detector: str | None = None) -> Export:
    """Export one expression (or ready loss name) of a space into a module (default
    ``./autoloss_loss.py``) and write its config fragment beside it."""
    space = space if isinstance(space, SearchSpace) else load_space(space)
    node = parse(expression, space)
    ready = next((key for key, text in space.losses.items() if expression.strip() in (key, text)), None)
    out = Path(out) if out else Path("autoloss_loss.py")
    module_name = module_name_for(out)
    if name or ready:
        prefix = class_prefix(name or ready)
        prefix = prefix if name or "autoloss" in prefix.lower() else "Autoloss" + prefix
    else:
        prefix = "Autoloss"
    label = re.sub(r"_(cls|reg)$", "", snake(name or ready or "")) or "searched"
    source = f"the ready loss {ready} of space {space.name}" if ready else \
        f"the expression given to `autoloss export` (space {space.name})"
    loss = ExportedLoss(node, space, f"{prefix}{BRANCH_WORDS[space.branch]}Loss",
                        f"{label}_{space.branch}_loss", f"A loss exported from {source}.")
    placement = _placement(detector, [loss])
    snippet = config_snippet(module_name, [loss], [], placement)
    docstring = "\n".join([
        "A loss function exported by autoloss, as an MMDetection loss module.", "",
        *textwrap.wrap(f"Source: {source}. The module needs only torch and mmdet, so it can be copied "
                       "anywhere importable. Regenerate it rather than edit it.", width=96, break_on_hyphens=False), "",
        f"{loss.class_name}:", *formula_lines(to_infix(node)), "",
        *_usage(module_name, snippet),
    ])
    return _write(out, [loss], docstring, snippet, [])


# ------------------------------------------------------------------------------------------------ shared


def _bundled(detector: str) -> bool:
    from autoloss.detection.mmdet.detectors import BUNDLED  # heavy: mmengine, mmdet

    return detector in BUNDLED


def _placement(detector: str | None, losses: list[ExportedLoss]) -> Placement:
    return detector_placement(detector) if detector else default_placement(losses)


def _usage(module_name: str, snippet: str) -> list[str]:
    return [f"Use in an MMDetection config (the fragment is also in {module_name}_config.py beside this "
            "file):", "", *("    " + line if line else "" for line in snippet.rstrip().splitlines())]


def formula_lines(text: str) -> list[str]:
    """An infix formula for a docstring listing: indented, wrapped at spaces."""
    return textwrap.wrap(text, width=92, initial_indent="    ", subsequent_indent="        ",
                         break_long_words=False, break_on_hyphens=False)


def _write(out: Path, losses: list[ExportedLoss], docstring: str, snippet: str, notes: list[str],
           run: dict | None = None) -> Export:
    source = module_source(losses, docstring, run)
    ast.parse(source)  # a generation bug must not reach the user's disk (parsed only, never run)
    config_path = out.with_name(f"{out.stem}_config.py")
    if len(os.fsencode(config_path.name)) > 255:  # the module would be written, its fragment not
        raise UserError(f"--out {out}: the file name is too long for its config fragment {config_path.name} "
                        "(a name is at most 255 bytes); choose a shorter one")
    write_atomic(output_file(out), source)  # each whole or not at all: a full disk leaves the user's old files as they were
    write_atomic(config_path, snippet)
    return Export(out, config_path, snippet, losses, list(notes))
