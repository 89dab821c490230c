"""The tables of ``autoloss evaluate --tracker``: AO, SR0.5 and SR0.75 per neck over the seeds, and its Markdown.

Also :func:`reusable_demo_data`: a demo search's data and baseline, when an evaluation can train on them.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from autoloss.engine import evidence
from autoloss.engine.runs import open_run
from autoloss.errors import UserError


def reusable_demo_data(run: str | None, settings) -> tuple[Path, Path] | None:
    """A demo search run's data and baseline, when they match these settings (so evaluate need not retrain)."""
    from autoloss.tracking.train import baseline_matches  # heavy: torch

    if run is None:
        return None
    try:
        task = open_run(run).config.get("task") or {}
    except UserError:
        return None
    data, baseline = task.get("data_root"), task.get("baseline")
    if not data or not baseline or task.get("settings") != settings.to_dict():
        return None
    if (Path(data) / "weights" / "list.txt").is_file() and baseline_matches(settings, data, baseline):
        return Path(data), Path(baseline)
    return None


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def result_table(variants, seeds, results) -> list[str]:
    """The Markdown table: AO, SR0.5, SR0.75 as mean ± standard deviation over the seeds; then each other
    neck's AO against the first (the hand-designed neck): Welch's one-sided test (:mod:`autoloss.engine.evidence`)."""
    lines = ["| neck | AO | SR0.5 | SR0.75 | seeds ok |", "| --- | ---: | ---: | ---: | ---: |"]
    ao = {}
    for name, _ in variants:
        ok = [results[(name, s)] for s in seeds if (name, s) in results and "error" not in results[(name, s)]]
        cells = [_mean_std([r[key] for r in ok]) for key in ("ao", "sr50", "sr75")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(ok)}/{len(seeds)} |")
        ao[name] = [float(r["ao"]) for r in ok]
    if not variants:
        return lines
    reference = variants[0][0]
    lines += ["", f"± is the standard deviation over the seeds. Each neck's AO against the {reference}: 'better' means "
                  f"at least {evidence.MIN_SEEDS} seeds each, mean above, and {evidence.TEST} t-test at level "
                  f"{evidence.ALPHA:g}, its p Holm-adjusted over the necks compared; ± is one standard error of the "
                  "difference.", ""]
    family = evidence.holm({name: evidence.compare(ao[name], ao[reference]) for name, _ in variants[1:]})
    for name, _ in variants[1:]:
        claim = family[name]
        if min(len(ao[name]), len(ao[reference])) < evidence.MIN_SEEDS:
            diff = f" (difference {claim.difference:+.3f})" if claim.difference is not None else ""
            lines.append(f"- {name}: {len(ao[name])} and {len(ao[reference])} finished seeds{diff}: fewer than "
                         f"{evidence.MIN_SEEDS} seeds each, so nothing can be claimed (--seeds 3 or more)")
        else:
            lines.append(f"- {name}: {claim.text(digits=3)}; {claim.bound_text(3)}")
    return lines


def evaluate_markdown(name: str, settings, splits: dict, variants, seeds, table, data_root) -> str:
    """evaluate.md: how tracker ``name`` (its TrackingSettings) trained and tracked each neck, the table, the necks."""
    s = settings
    lines = [f"# Tracker evaluation: {name}", "",
             f"Each neck replaces the hand-designed one in the baseline tracker (ResNet-{s.depth} backbone and size head "
             f"frozen, as in the search); adapters, neck and classifier are trained {s.steps} steps of batch {s.batch} "
             f"(Adam, lr {s.lr}) on `{splits['weights']}/` with seeds {', '.join(map(str, seeds))}, then "
             f"tracked one pass (OPE) over `{splits['test']}/` of `{data_root}`. GOT-10k metrics: AO, "
             "SR0.5, SR0.75, mean ± standard deviation over the seeds.", "", *table, "", "## Necks", ""]
    for neck, spec in variants:
        lines += [f"- **{neck}**: `{spec}`"]
    return "\n".join(lines) + "\n"
