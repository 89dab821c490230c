"""A run's best cells as one standalone PyTorch module: the 8 operations, the Cell class, the genotypes as data.

The written module needs only torch. Its source is :data:`TEMPLATE` (written here, not copied at run
time from the package) followed by the genotypes, printed from validated data (operation names from
:data:`~autoloss.cell.genotype.PRIMITIVES`, integer inputs): nothing is evaluated, neither here nor
in the module. What comes from the run's store or its folder's name (the metric, the ranking stage,
the tracker, the run's name and path) enters the source only through :mod:`autoloss.source_text` (a
literal, or a plain word in prose), and whole in ``RUN``. Its modules mirror
:mod:`autoloss.cell.operations` and :class:`autoloss.cell.model.Cell` (the same layers, in the same
order, under the same names), so a state dict of a cell trained here
loads into the exported one.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

from autoloss.cell.genotype import Genotype, check, format_genotype
from autoloss.errors import UserError
from autoloss.files import output_file, write_atomic
from autoloss.source_text import ascii_label, data_lines, literal, mention, module_name

TEMPLATE = '''"""{title}

Written by `autoloss export`; needs only torch. Each genotype below is a DARTS-style cell: 4 nodes,
node k sums two edges (operation, input), inputs 0 and 1 are the cell's two inputs (the tracker's
adapted Block3 and Block4 features, both [B, C, H, W] at one stride), 2..5 the earlier nodes; the
output concatenates the 4 nodes: [B, 4C, H, W].

Usage::

    import torch
    from {module} import GENOTYPES, build_cell

    cell = build_cell("{first}", channels=64)   # or Cell(GENOTYPES["{first}"], 64)
    s0 = s1 = torch.randn(2, 64, 18, 18)
    out = cell(s0, s1)                           # [2, 256, 18, 18]

In CHASE's tracker the cell sits where the hand-designed neck was: s0 = conv3x3/stride 2 of ResNet's
stride-8 map, s1 = conv1x1 of its stride-16 map, each to C channels; the classifier reads the 4C
output. The module names mirror autoloss.cell.model.Cell, so autoloss's trained weights load.
"""

import torch
from torch import nn

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5"]


class Zero(nn.Module):
    """The 'none' edge: zeros of the input's shape."""

    def forward(self, x):
        return x.mul(0.0)


def _relu_dw_pw_bn(channels, kernel, dilation):
    padding = dilation * (kernel - 1) // 2
    return [nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, kernel, padding=padding, dilation=dilation, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels)]


def operation(name, channels):
    """One edge at stride 1: the eight DARTS operations."""
    if name == "none":
        return Zero()
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity()
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        kernel = int(name[-1])
        return nn.Sequential(*_relu_dw_pw_bn(channels, kernel, 1), *_relu_dw_pw_bn(channels, kernel, 1))
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        return nn.Sequential(*_relu_dw_pw_bn(channels, int(name[-1]), 2))
    raise ValueError(f"unknown operation {{name!r}} (known: {{', '.join(PRIMITIVES)}})")


class Cell(nn.Module):
    """The discrete cell of ``genotype`` (8 (operation, input) pairs, two per node) with C channels per node."""

    def __init__(self, genotype, channels):
        super().__init__()
        genotype = [tuple(pair) for pair in genotype]
        if len(genotype) != 8:
            raise ValueError(f"a genotype has 8 (operation, input) pairs, got {{len(genotype)}}")
        for index, (op, source) in enumerate(genotype):
            if op not in PRIMITIVES or not 0 <= source <= index // 2 + 1:
                raise ValueError(f"pair {{index}} ({{op!r}}, {{source}}) is not a valid edge of node {{index // 2}}")
        self.genotype = genotype
        self.channels = channels
        self.out_channels = 4 * channels
        self.edges = nn.ModuleList()
        self._wiring = []  # per node: (input state, edge index)
        for k in range(4):
            node = []
            for op, source in genotype[2 * k: 2 * k + 2]:
                if op == "none":
                    continue
                self.edges.append(operation(op, channels))
                node.append((source, len(self.edges) - 1))
            self._wiring.append(node)

    def forward(self, s0, s1):
        states = [s0, s1]
        for node in self._wiring:
            total = None
            for source, index in node:
                h = self.edges[index](states[source])
                total = h if total is None else total + h
            states.append(torch.zeros_like(s0) if total is None else total)
        return torch.cat(states[2:], dim=1)


def build_cell(name, channels):
    """The cell ``GENOTYPES[name]`` with ``channels`` per node."""
    return Cell(GENOTYPES[name], channels)
'''


@dataclass
class ExportedCell:
    name: str
    genotype: Genotype
    title: str  # where it comes from and how it scored


@dataclass
class CellExport:
    """What ``export_run`` wrote: the module, its cells and the lines to print."""

    module_path: Path
    cells: list[ExportedCell]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"note: {note}" for note in self.notes]
        lines.append(f"wrote {self.module_path}: {len(self.cells)} cell{'s' if len(self.cells) > 1 else ''} as a "
                     "standalone PyTorch module (needs only torch)")
        for cell in self.cells:
            lines.append(f"  {cell.name}: {cell.title}\n      {format_genotype(cell.genotype)}")
        module = self.module_path.stem
        first = self.cells[0].name
        lines.append(f"\nusage:\n  from {module} import build_cell\n  cell = build_cell({first!r}, channels=64)  "
                     "# cell(s0, s1): two [B, 64, H, W] -> [B, 256, H, W]")
        return "\n".join(lines)


def _identifier(text: str) -> str:
    name = re.sub(r"\W", "_", text)
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = f"cell_{name}"
    return name


def module_source(cells: list[ExportedCell], title: str, module: str, run: dict | None = None) -> str:
    """The module's text: the template, then ``RUN`` (where the cells come from, as data), ``GENOTYPES``
    and ``DARTS_TEXT`` printed from checked data. ``title`` and the cells' titles become a docstring and
    comments: they hold stored text only as :func:`~autoloss.source_text.literal` (a ValueError otherwise)."""
    if not cells:
        raise UserError("no cell to export")
    for text in [title, *(cell.title for cell in cells)]:
        if not text.isprintable() or '"""' in text:
            raise ValueError(f"a title for generated source holds raw text: {text[:80]!r}")
    source = TEMPLATE.format(title=title, module=module, first=cells[0].name)
    lines = []
    if run:
        lines += ["", "", "# Where the cells come from (the run's folder and what its store says), as data.",
                  *data_lines("RUN", run)]
    lines += ["", "", "# The exported cells: name -> 8 (operation, input) pairs, two per node (nodes 0..3).",
              "GENOTYPES = {"]
    for cell in cells:
        check(cell.genotype)
        pairs = ", ".join(f"({op!r}, {int(source)})" for op, source in cell.genotype.normal)
        lines.append(f"    # {cell.title}")
        lines.append(f"    {literal(cell.name)}: [{pairs}],")
    lines += ["}", "", "# The same cells in the DARTS Genotype text form (autoloss parses it back).", "DARTS_TEXT = {"]
    lines += [f"    {literal(cell.name)}: {literal(format_genotype(cell.genotype))}," for cell in cells]
    lines += ["}", ""]
    return source + "\n".join(lines)


def write_module(cells: list[ExportedCell], path: Path, title: str, run: dict | None = None) -> Path:
    """Write the module to ``path`` atomically (its name checked by the loss exporter's rule)."""
    path = Path(path)
    source = module_source(cells, title, module_name(path), run)
    return write_atomic(output_file(path), source)


def export_run(run_dir, top: int = 1, out=None, name: str | None = None, include_worse: bool = False,
               include_unconfirmed: bool = False, **_) -> CellExport:
    """The ``top`` best cells of a cell search run (by its ranking stage) as one module; see :class:`CellExport`.

    As for losses, only cells that beat the baseline (the hand-designed neck) on the ranking stage are
    exported unless ``include_worse``; with it, each one that did not says so in its title.
    """
    from autoloss.engine.runs import beating_baseline, open_run
    from autoloss.engine.store import BASELINE_GENERATION

    record = open_run(run_dir)
    if record.kind != "cell":
        raise UserError(f"{record.run_dir} is a run of kind '{record.kind}', not a cell search")
    ranked = [(row, verdict) for row, verdict, _ in record.standing(top + 1)  # retrained cells first
              if row.generation != BASELINE_GENERATION][:top]
    if not ranked:
        raise UserError(f"{record.run_dir} holds no searched cell with a {record.ranking} result yet: nothing to export")
    from autoloss.cell.genotype import parse_genotype

    prefix = _identifier(name) if name else "cell"
    folder = record.run_dir.resolve().name
    run_name = ascii_label(folder)
    cells = []
    baseline = next((c for c in record.candidates(BASELINE_GENERATION)), None)
    base = record.verdict(baseline.id, record.ranking) if baseline is not None else None
    base_score = base.metrics.get("fitness") if base is not None and base.status == "ok" else None
    base_text = f"; the baseline ({mention(baseline.genotype)}) {base_score:.4f}" if base_score is not None else ""
    claims = record.claims()
    ranked, notes = beating_baseline(ranked, lambda item: item[1].metrics.get("fitness"), base_score, include_worse,
                                     ("cell", "cells"), record.run_dir, f"{record.ranking} {record.metric}",
                                     claim=lambda item: claims.get(item[0].id), include_unconfirmed=include_unconfirmed)
    for rank, (row, verdict) in enumerate(ranked, 1):
        score = verdict.metrics.get("fitness")
        worse = "; WORSE THAN THE BASELINE" if base_score is not None and score <= base_score else ""
        claim = claims.get(row.id)
        worse += (f"; confirmed {claim.text()}" if claim is not None and claim.better else
                  f"; UNCONFIRMED: {claim.text() if claim is not None and claim.candidate.n else 'one seed'}")
        title = (f"rank {rank} of run {mention(folder)}: {mention(record.ranking)} {mention(record.metric)} "
                 f"{score:.4f}{base_text}{worse}; generation {row.generation + 1} #{row.index}")
        cells.append(ExportedCell(f"{prefix}{rank}", parse_genotype(row.genotype), title))
    if len(ranked) < top:
        notes.append(f"the run has {len(ranked)} searched cell(s) with a result, fewer than --top {top}")
    path = Path(out) if out else record.run_dir / "export" / f"autoloss_cells_{run_name}.py"
    task = record.config.get("task") if isinstance(record.config.get("task"), dict) else {}
    tracker = task.get("tracker") if isinstance(task.get("tracker"), str) else "?"
    title = (f"Neck cells found by autoloss (run {mention(folder)}, tracker {mention(tracker)}, "
             f"metric {mention(record.metric)})")
    run = {"run": folder, "run_dir": str(record.run_dir.resolve()), "tracker": tracker, "metric": record.metric,
           "ranking": record.ranking}
    return CellExport(write_module(cells, path, title, run), cells, notes)
