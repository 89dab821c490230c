"""What the papers measure of a differentiable search (DARTS, CHASE, R-DARTS, MS-DARTS), drawn per epoch.

Read from the ``derived`` verdicts a differentiable strategy stores each epoch (one per seed):

- ``holdout_losses.png``: the hold-out loss of the supernet and of the derived cell per epoch and seed,
  the chosen epoch (the cell's minimum) marked;
- ``skip_connections.png``: skip connections in each epoch's derived cell (the DARTS collapse);
- ``eigenvalue.png``: the largest eigenvalue of the architecture loss's Hessian in alpha (R-DARTS's
  and MS-DARTS's stability measure; exact, in eval mode), with the skip-dropout rate of the epoch;
- ``alpha_final.png``: the mixing weights (softmax of alpha) per edge of each seed's last epoch.

:func:`is_differentiable_run` says whether a run is one; :func:`draw` writes the figures,
:func:`markdown` the report's section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from autoloss.cell.genotype import PRIMITIVES
from autoloss.differentiable.scheduler import DERIVED
from autoloss.differentiable.strategies import is_differentiable
from autoloss.engine.numbers import finite_number
from autoloss.engine.progress import fmt_number
from autoloss.files import write_atomic

FIGURES = {"holdout_losses": "holdout_losses.png", "skip_connections": "skip_connections.png",
           "eigenvalue": "eigenvalue.png", "alpha_final": "alpha_final.png"}
DPI = 120


@dataclass(frozen=True)
class Epoch:
    """One seed's epoch as stored: its derived cell and measures."""

    seed: int
    epoch: int
    genotype: str
    passed: bool  # the chosen epoch of its seed
    metrics: dict


def is_differentiable_run(record) -> bool:
    """A run of one of the differentiable strategies (by its stored strategy, or its derived verdicts)."""
    return is_differentiable(record.config.get("strategy")) or bool(record.verdicts(gate=DERIVED))


def section(record, out: Path):
    """The report section of a differentiable run (figures, Markdown), or None for any other run."""
    if not is_differentiable_run(record):
        return None
    return draw(record, out), markdown(record)


def epochs(record) -> dict[int, list[Epoch]]:
    """seed -> its epochs in order."""
    found: dict[int, list[Epoch]] = {}
    for verdict in record.verdicts(gate=DERIVED):
        row = record.candidate(verdict.candidate_id)
        seed = verdict.metrics.get("seed", row.index)
        found.setdefault(int(seed), []).append(Epoch(int(seed), row.generation, row.genotype, verdict.passed,
                                                     dict(verdict.metrics)))
    return {seed: sorted(items, key=lambda e: e.epoch) for seed, items in sorted(found.items())}


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure  # heavy: matplotlib

    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, axes


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    return write_atomic(path, lambda file: figure.savefig(file, dpi=DPI, format="png"))


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator  # heavy: matplotlib

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="dimgray")


def _series(items: list[Epoch], key: str) -> tuple[list[int], list[float]]:
    points = [(e.epoch + 1, finite_number(e.metrics.get(key))) for e in items]
    points = [(x, y) for x, y in points if y is not None]
    return [x for x, _ in points], [y for _, y in points]


def holdout_losses(by_seed: dict[int, list[Epoch]], path: Path) -> Path:
    figure, axes = _figure(7, 4)
    ax = axes[0, 0]
    colors = [f"C{i}" for i in range(10)]
    for seed, items in by_seed.items():
        color = colors[seed % 10]
        x, y = _series(items, "cell_holdout")
        ax.plot(x, y, "-o", color=color, markersize=3, label=f"seed {seed}: derived cell")
        x, y = _series(items, "supernet_holdout")
        ax.plot(x, y, "--", color=color, alpha=0.6, label=f"seed {seed}: supernet")
        for e in items:
            if e.passed and finite_number(e.metrics.get("cell_holdout")) is not None:
                ax.plot([e.epoch + 1], [e.metrics["cell_holdout"]], "*", color=color, markersize=14)
    if not by_seed:
        _empty(ax, "no epoch recorded yet")
    _epoch_axis(ax)
    ax.set_ylabel("hold-out loss")
    ax.set_title("Hold-out loss per epoch (star: the chosen epoch, the cell's minimum)")
    if by_seed:
        ax.legend(fontsize=7)
    return _save(figure, path)


def skip_connections(by_seed: dict[int, list[Epoch]], path: Path) -> Path:
    figure, axes = _figure(7, 3.2)
    ax = axes[0, 0]
    for seed, items in by_seed.items():
        x, y = _series(items, "skips")
        ax.step(x, y, where="mid", label=f"seed {seed}")
    if not by_seed:
        _empty(ax, "no epoch recorded yet")
    ax.set_ylim(-0.3, 8.3)
    _epoch_axis(ax)
    ax.set_ylabel("skip connections (of 8 edges)")
    ax.set_title("Skip connections in the derived cell")
    if by_seed:
        ax.legend(fontsize=7)
    return _save(figure, path)


def eigenvalue(by_seed: dict[int, list[Epoch]], path: Path) -> Path:
    figure, axes = _figure(7, 3.6)
    ax = axes[0, 0]
    drawn = False
    for seed, items in by_seed.items():
        x, y = _series(items, "eigenvalue")
        if x:
            ax.plot(x, y, "-o", markersize=3, label=f"seed {seed}")
            drawn = True
    if not drawn:
        _empty(ax, "no eigenvalue logged (the search ran with eigenvalue logging off)")
    _epoch_axis(ax)
    ax.set_ylabel("largest Hessian eigenvalue")
    ax.set_title("Largest eigenvalue of the architecture loss's Hessian in alpha")
    if by_seed:
        first = next(iter(by_seed.values()))
        x, y = _series(first, "skip_dropout")
        if x:
            twin = ax.twinx()
            twin.plot(x, y, ":", color="gray", label="skip dropout")
            twin.set_ylabel("skip dropout rate", color="gray")
            twin.set_ylim(0, 1)
    if drawn:
        ax.legend(fontsize=7, loc="upper left")
    return _save(figure, path)


def alpha_final(by_seed: dict[int, list[Epoch]], path: Path) -> Path:
    from autoloss.differentiable.derive import edge_inputs  # heavy: torch (the report imports this module)

    seeds = [seed for seed, items in by_seed.items() if items and isinstance(items[-1].metrics.get("weights"), list)]
    figure, axes = _figure(3.2 * max(len(seeds), 1) + 1.5, 5, 1, max(len(seeds), 1))
    if not seeds:
        _empty(axes[0, 0], "no mixing weights recorded yet")
        return _save(figure, path)
    labels = [f"{source}->{node + 2}" for node, source in edge_inputs()]
    top = max(max(max(row) for row in by_seed[seed][-1].metrics["weights"]) for seed in seeds)
    image = None
    for column, seed in enumerate(seeds):
        ax = axes[0, column]
        last = by_seed[seed][-1]
        image = ax.imshow(last.metrics["weights"], vmin=0, vmax=max(top, 1e-6), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(PRIMITIVES)))
        ax.set_xticklabels(PRIMITIVES, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels if column == 0 else [], fontsize=7)
        ax.set_title(f"seed {seed}, epoch {last.epoch + 1}", fontsize=9)
    figure.colorbar(image, ax=list(axes[0]), shrink=0.8, label="softmax(alpha)")
    figure.suptitle("Mixing weights per edge at the last epoch (uniform: 0.125)")
    return write_atomic(path, lambda file: figure.savefig(file, dpi=DPI, bbox_inches="tight", format="png"))


def draw(record, out: Path) -> dict[str, Path]:
    """The four figures of a differentiable run, written into ``out``."""
    by_seed = epochs(record)
    return {"holdout_losses": holdout_losses(by_seed, out / FIGURES["holdout_losses"]),
            "skip_connections": skip_connections(by_seed, out / FIGURES["skip_connections"]),
            "eigenvalue": eigenvalue(by_seed, out / FIGURES["eigenvalue"]),
            "alpha_final": alpha_final(by_seed, out / FIGURES["alpha_final"])}


def markdown(record) -> str:
    """The report's section: the chosen epoch per seed, the winner, the per-epoch figures."""
    by_seed = epochs(record)
    options = record.config.get("options") if isinstance(record.config.get("options"), dict) else {}
    lines = ["## Differentiable search", "",
             f"Strategy `{record.config.get('strategy')}`, {len(by_seed)} seed(s), at most {options.get('epochs', '?')} "
             f"epochs, warm-up share {options.get('warmup', '?')}, skip dropout from {options.get('skip_dropout', '?')}, "
             f"patience {options.get('patience', '?')}; the chosen epoch of each seed is the minimum of the "
             f"{options.get('criterion', 'cell')}'s hold-out loss.", ""]
    rows = []
    best_seed, best_loss = None, math.inf
    for seed, items in by_seed.items():
        chosen = next((e for e in items if e.passed), None)
        loss = finite_number(chosen.metrics.get("cell_holdout")) if chosen else None
        if loss is not None and loss < best_loss:
            best_seed, best_loss = seed, loss
        last = items[-1]
        rows.append(f"| seed {seed} | {len(items)} | {chosen.epoch + 1 if chosen else '-'} | "
                    f"{fmt_number(chosen.metrics.get('cell_holdout') if chosen else None)} | "
                    f"{fmt_number(chosen.metrics.get('supernet_holdout') if chosen else None)} | "
                    f"{chosen.metrics.get('skips', '-') if chosen else '-'} | {fmt_number(last.metrics.get('eigenvalue'))} | "
                    f"`{(chosen.genotype if chosen else '-')[:400]}` |")
    if rows:
        lines += ["| seed | epochs run | chosen epoch | cell hold-out | supernet hold-out | skips | last eigenvalue "
                  "| chosen cell |", "|---|---:|---:|---:|---:|---:|---:|---|", *rows, ""]
        if best_seed is not None:
            lines += [f"Winner by hold-out loss: seed {best_seed} ({best_loss:.4f}).", ""]
    else:
        lines += ["No epoch recorded yet.", ""]
    lines += [f"![Hold-out losses per epoch]({FIGURES['holdout_losses']})", "",
              f"![Skip connections per epoch]({FIGURES['skip_connections']})", "",
              f"![Largest Hessian eigenvalue per epoch]({FIGURES['eigenvalue']})", "",
              f"![Mixing weights at the last epoch]({FIGURES['alpha_final']})", ""]
    return "\n".join(lines)
