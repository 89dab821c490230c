"""The report's three figures, drawn from a :class:`~autoloss.report.run.Run` into PNG files.

Figures are built as ``matplotlib.figure.Figure`` objects (no pyplot: nothing global is left open)
and rendered by the Agg backend, which :func:`autoloss.report.write_report` selects. A figure with
nothing to show yet still gets written, with a line saying what is missing.
"""

from __future__ import annotations

import math
from pathlib import Path

from autoloss.report.run import Run, duration

DPI = 120
COLORS = {"validity": "tab:red", "equivalence": "tab:purple", "convergence": "tab:orange", "mos": "tab:blue",
          "stopped": "lightgray", "proxy": "tab:green", "best": "tab:blue", "median": "tab:cyan",
          "hall": "tab:orange", "failed": "crimson", "baseline": "black"}


def _figure(width: float, height: float, rows: int = 1):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return figure, list(axes)


def _save(figure, path: Path) -> Path:
    from autoloss.files import write_atomic

    figure.tight_layout()
    return write_atomic(path, lambda file: figure.savefig(file, dpi=DPI, format="png"))


def _message(ax, text: str, y: float = 0.5) -> None:
    """Write ``text`` across an axes that has nothing else to show."""
    ax.text(0.5, y, text, ha="center", va="center", transform=ax.transAxes, color="dimgray", wrap=True)


def _baseline_line(ax, value: float | None, label: str, sd: float | None = None, n: int = 1) -> None:
    """The baseline's line; with its spread over seeds (the proxy's noise), a band of mean ± sd around it."""
    if value is None:
        return
    if sd is not None:
        ax.axhline(value, color=COLORS["baseline"], linestyle="--", linewidth=1.2,
                   label=f"{label} {value:.4f} (mean of {n} seeds)")
        ax.axhspan(value - sd, value + sd, color=COLORS["baseline"], alpha=0.12, linewidth=0,
                   label=f"baseline ± sd {sd:.4f} (the proxy's noise)")
    else:
        ax.axhline(value, color=COLORS["baseline"], linestyle="--", linewidth=1.2, label=f"{label} {value:.4f}")


def _baseline_label(run: Run, formulas) -> str:
    name = formulas.ready_name(run.baseline.genotype) if run.baseline and formulas else None
    return f"baseline ({name})" if name else "baseline"


def fitness_per_generation(run: Run, path: Path, formulas=None) -> Path:
    """Best and median proxy fitness per generation, the hall of fame's best so far and the baseline."""
    from matplotlib.transforms import blended_transform_factory

    figure, (ax,) = _figure(7.5, 4.5)
    generations = run.generations
    ax.set_title(f"Proxy {run.metric} per generation")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"proxy {run.metric}")
    _baseline_line(ax, run.baseline_fitness, _baseline_label(run, formulas), run.baseline_sd, run.baseline_sample.n)
    points = [(g.shown, f) for g in generations for f in g.fitnesses]
    if not points:
        _message(ax, "no generation bred yet" if not generations else "no searched candidate has a proxy result yet",
                 y=0.3)
    else:
        nan = math.nan
        xs = [g.shown for g in generations]
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, color="silver", zorder=2,
                   label="each proxy result")
        ax.plot(xs, [g.best.fitness if g.best else nan for g in generations], marker="o", color=COLORS["best"],
                zorder=4, label="best of the generation")
        ax.plot(xs, [g.median if g.median is not None else nan for g in generations], marker="s", linestyle=":",
                color=COLORS["median"], zorder=3, label="median of the generation")
        ax.plot(xs, [g.best_so_far if g.best_so_far is not None else nan for g in generations],
                drawstyle="steps-post", linewidth=2.5, marker="D", markersize=10, alpha=0.6, color=COLORS["hall"],
                zorder=3, label="best so far (hall of fame)")
        column = blended_transform_factory(ax.transData, ax.transAxes)
        for g in generations:
            if not g.fitnesses:
                ax.text(g.shown, 0.3, "no proxy\nresult" if g.finished else "no proxy\nresult yet",
                        transform=column, ha="center", va="center", fontsize=8, color="dimgray",
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    if generations:
        xs = [g.shown for g in generations]
        ax.set_xticks(xs)
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.grid(axis="y", alpha=0.3)
    _legend(ax)
    return _save(figure, path)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def gate_funnel(run: Run, path: Path) -> Path:
    """Per generation, the candidates each gate rejected and those that reached the proxy (stacked bars)."""
    figure, (ax,) = _figure(7.5, 4.5)
    ax.set_title("Where each generation's candidates stopped")
    ax.set_xlabel("generation")
    ax.set_ylabel("candidates")
    generations = run.generations
    if not generations:
        _message(ax, "no generation bred yet")
        return _save(figure, path)
    xs = [g.shown for g in generations]
    segments = [("proxy", "reached the proxy", [g.reached_proxy for g in generations])]
    stopped = [max(g.stopped, 0) for g in generations]
    if any(stopped):
        segments.append(("stopped", "passed, not evaluated further", stopped))
    for gate in reversed([g for g in run.pipeline if g != "proxy" and g in run.gates]):
        segments.append((gate, f"rejected by {run.titles[gate]}", [g.rejected(gate) for g in generations]))
    tallest = max([g.bred for g in generations] + [1])
    bottoms = [0] * len(generations)
    for key, label, counts in segments:
        bars = ax.bar(xs, counts, bottom=bottoms, color=COLORS.get(key, "tab:gray"), edgecolor="white", label=label,
                      hatch="//" if key == "stopped" else None)
        for bar, count in zip(bars, counts):
            if count and count >= 0.05 * tallest:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2, str(count),
                        ha="center", va="center", fontsize=8, color="white" if key not in ("stopped",) else "black")
        bottoms = [b + c for b, c in zip(bottoms, counts)]
    for g, top in zip(generations, bottoms):
        ax.text(g.shown, top, f"{g.bred} bred" + ("" if g.finished else "\n(unfinished)"), ha="center",
                va="bottom", fontsize=8)
    ax.set_ylim(0, tallest * 1.18)
    ax.set_xticks(xs)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, path)


def candidates_over_time(run: Run, path: Path, formulas=None) -> Path:
    """Every MOS and proxy evaluation in the order it finished: a point each, failures marked."""
    evaluations = [e for e in run.evaluations if not e.reused]
    stages = ["proxy"] + (["mos"] if "mos" in run.gates else [])
    figure, axes = _figure(8.5, 3.2 * len(stages) + 0.6, rows=len(stages))
    figure.suptitle(f"Candidates evaluated over the search ({_span(run)})" if run.start else "Candidates evaluated")
    order = {id(e): n for n, e in enumerate(evaluations, 1)}
    for ax, stage in zip(axes, stages):
        name = "proxy" if stage == "proxy" else "MOS"
        ax.set_ylabel(f"{name} {run.metric}")
        mine = [e for e in evaluations if e.gate == stage]
        ok = [e for e in mine if e.fitness is not None]
        (_proxy_points if stage == "proxy" else _mos_points)(ax, ok, order, len(evaluations))
        _baseline_line(ax, _baseline_of(run, stage), _baseline_label(run, formulas),
                       run.baseline_sd if stage == "proxy" else None, run.baseline_sample.n)
        _failure_marks(ax, [e for e in mine if e.fitness is None], order)
        if not evaluations:
            _message(ax, "no MOS or proxy evaluation of a searched candidate yet", y=0.3)
        elif not ok:
            _message(ax, f"no {name} result yet", y=0.3)
        _generation_marks(ax, evaluations, order, label=ax is axes[0])
        ax.grid(axis="y", alpha=0.3)
        _legend(ax)
    axes[-1].set_xlabel("evaluation number (MOS and proxy together, in the order they finished)")
    if evaluations:
        axes[-1].set_xlim(0, len(evaluations) + 1)
    return _save(figure, path)


def _proxy_points(ax, ok, order, last: int) -> None:
    """The proxy results and the best so far, as a step line to the last evaluation."""
    if not ok:
        return
    ax.scatter([order[id(e)] for e in ok], [e.fitness for e in ok], s=22, color=COLORS["proxy"],
               edgecolor="darkgreen", zorder=3, label=f"proxy result ({len(ok)})")
    best, xs, ys = -math.inf, [], []
    for e in ok:
        best = max(best, e.fitness)
        xs.append(order[id(e)])
        ys.append(best)
    ax.plot(xs + [last], ys + [best], drawstyle="steps-post", color=COLORS["hall"], linewidth=2, zorder=2,
            label="best so far")


def _mos_points(ax, ok, order, last: int) -> None:
    """The MOS scores: filled when the candidate passed MOS, hollow when MOS stopped it."""
    chosen = [e for e in ok if e.verdict.passed]
    dropped = [e for e in ok if not e.verdict.passed]
    if chosen:
        ax.scatter([order[id(e)] for e in chosen], [e.fitness for e in chosen], s=26, marker="^",
                   color=COLORS["mos"], zorder=3, label=f"MOS, passed ({len(chosen)})")
    if dropped:
        ax.scatter([order[id(e)] for e in dropped], [e.fitness for e in dropped], s=26, marker="^",
                   facecolor="none", edgecolor=COLORS["mos"], zorder=3, label=f"MOS, rejected ({len(dropped)})")


def _failure_marks(ax, failed, order) -> None:
    """Crosses in a strip below every result, one per failed training, the kinds counted in the legend."""
    if not failed:
        return
    kinds: dict[str, int] = {}
    for e in failed:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    low, high = ax.get_ylim()
    band = 0.12 * (high - low)
    ax.set_ylim(low - band, high)
    ax.axhspan(low - band, low - 0.15 * band, color=COLORS["failed"], alpha=0.06, linewidth=0)
    ax.scatter([order[id(e)] for e in failed], [low - 0.55 * band] * len(failed), marker="x", s=40,
               color=COLORS["failed"], zorder=4,
               label="failed: " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))


def _baseline_of(run: Run, stage: str) -> float | None:
    if stage == "proxy":
        return run.baseline_fitness  # the mean over its seeds where it has several
    evaluation = run.baseline_scores.get(stage)
    return evaluation.fitness if evaluation else None


def _generation_marks(ax, evaluations, order, label: bool) -> None:
    """A dotted line where each generation's first evaluation lies, labelled above the axes."""
    from matplotlib.transforms import blended_transform_factory

    firsts = {}
    for e in evaluations:
        firsts.setdefault(e.candidate.generation, order[id(e)])
    if len(firsts) < 2:
        return
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for generation, x in sorted(firsts.items()):
        ax.axvline(x - 0.5, color="gray", linestyle=":", linewidth=0.8, zorder=1)
        if label:
            ax.text(x - 0.5, 1.01, f"gen {generation + 1}", transform=top, fontsize=7, color="gray", va="bottom")


def _span(run: Run) -> str:
    return duration(run.end - run.start) if run.start is not None and run.end is not None else ""
