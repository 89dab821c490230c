"""The report of a search run: figures and a Markdown summary written from RUN_DIR/run.sqlite.

    from autoloss.report import write_report
    written = write_report("runs/demo-faster_rcnn-cls-cse-seed0")  # -> RUN_DIR/report/report.md, *.png

Modules: :mod:`~autoloss.report.run` reads the store, :mod:`~autoloss.report.figures` draws,
:mod:`~autoloss.report.markdown` writes the text (genotypes printed by :mod:`autoloss.loss.formulas`),
the ``autoloss report`` subcommand is :mod:`autoloss.commands.report`.
"""

from __future__ import annotations

from pathlib import Path

from autoloss import plugins  # noqa: F401  (registers the built-in representation kinds this reads)
from autoloss.engine import registry
from autoloss.engine.runs import open_run
from autoloss.files import writable_dir, write_atomic
from autoloss.report.run import read_run

__all__ = ["write_report"]


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, top: int = 10) -> dict:
    """Write report.md and its three figures for the run in ``run_dir`` (default out: RUN_DIR/report).

    Returns ``{"report": path of report.md, "figures": {name: path of the PNG}, "notes": [what is
    missing from a partial run]}``. Raises :class:`autoloss.errors.UserError` when ``run_dir`` holds no
    run store.
    """
    import matplotlib  # heavy: matplotlib, and the loss package's torch below

    matplotlib.use("Agg")
    from autoloss.report import figures
    from autoloss.report.markdown import FIGURES, render

    record = open_run(run_dir)
    run = read_run(record, top=top)
    out = writable_dir(Path(out_dir) if out_dir is not None else record.run_dir / "report", "report directory")
    formulas = registry.kind(record.kind).describer(run.config)
    written = {
        "gate_funnel": figures.gate_funnel(run, out / FIGURES["funnel"]),
        "fitness_per_generation": figures.fitness_per_generation(run, out / FIGURES["fitness"], formulas),
        "candidates_over_time": figures.candidates_over_time(run, out / FIGURES["time"], formulas),
    }
    pictures = {}
    if hasattr(formulas, "draw"):  # a kind whose genotypes are drawn (cells): the top ones as PNGs
        for rank, (row, _, _) in enumerate(run.top, 1):
            name = f"{getattr(formulas, 'noun', 'candidate')}_{rank}.png"
            if formulas.draw(row.genotype, out / name, title=f"rank {rank}: generation {row.generation + 1} #{row.index}"):
                pictures[row.genotype] = name
                written[f"{getattr(formulas, 'noun', 'candidate')}_{rank}"] = out / name
    text = render(run, formulas, pictures)
    for section in registry.report_sections():  # e.g. darts, darts2, ms-darts: the per-epoch measures
        added = section(record, out)
        if added is not None:
            figures_added, markdown = added
            written.update(figures_added)
            text = text.rstrip("\n") + "\n\n" + markdown
    report = out / "report.md"
    write_atomic(report, text)
    return {"report": report, "figures": written, "notes": run.notes + ([formulas.problem] if formulas.problem else [])}
