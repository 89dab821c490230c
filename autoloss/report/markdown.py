"""The text of report.md: what was searched, the funnel, the fitness, the best losses and the failures.

Written for a person who did not run the search: every table says what its numbers count, and
whatever a partial run lacks is said at the top instead of being left out silently.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import Any

from autoloss.engine import evidence
from autoloss.report.run import EXPENSIVE, Evaluation, Run, duration

# What a representation kind's reader hooks describe genotypes with (the loss package's Formulas, the
# cell's describer): registry.kind(kind).describer(config); the report needs only its methods.
Describer = Any

STRATEGY_TITLES = {"cse": "CSE-Autoloss (cheap gates, then MOS, then the proxy)",
                   "vanilla": "vanilla evolution (validity only, every valid candidate to the proxy)",
                   "random": "random search (random genotypes, validity only, every valid candidate to the proxy)"}
FIGURES = {"funnel": "gate_funnel.png", "fitness": "fitness_per_generation.png",
           "time": "candidates_over_time.png"}


def _f(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def _cell(text: str, limit: int = 160) -> str:
    """Text safe inside a Markdown table cell (one line, no bare pipe), shortened to ``limit``."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"`` {text} ``"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _noun(formulas) -> tuple[str, str]:
    """What a candidate is called (a describer's ``noun``; losses by default), singular and plural."""
    noun = getattr(formulas, "noun", "loss")
    return noun, "losses" if noun == "loss" else f"{noun}s"


def _forms(formulas) -> dict[str, str]:
    return {"expression": "prefix", "infix": "infix", **getattr(formulas, "forms", {})}


def _candidate_name(evaluation: Evaluation) -> str:
    row = evaluation.candidate
    return "baseline" if row.generation < 0 else f"gen {row.generation + 1} #{row.index}"


# ------------------------------------------------------------------------------------- sections

def _what(run: Run, formulas: Describer) -> list[str]:
    config, task, search = run.config, run.config.get("task") or {}, run.search
    space = formulas.space
    branch = task.get("branch") or (space.branch if space else None)
    branch_text = {"cls": "the classification loss", "reg": "the regression loss"}.get(branch, "a loss")
    if config.get("detector"):
        target = f"{branch_text} of the MMDetection detector `{config['detector']}`"
        proxy = (f"train {task.get('proxy_iters', '?')} iterations on the training split, COCO bbox mAP on the "
                 "validation split")
        mos = f"train {task.get('mos_iters', '?')} iterations on D_verify, mAP on it"
    elif config.get("tracker"):
        steps = (task.get("settings") or {}).get("steps", "?")
        stages = task.get("stages") or {}
        splits = task.get("splits") or {}
        target = f"the neck cell of the tracker `{config['tracker']}` (the hand-designed neck is the baseline)"
        proxy = (f"train adapters, cell and classifier {steps} steps on `{splits.get('weights', 'weights')}/` "
                 f"(backbone frozen), AO of one-pass tracking on `{splits.get('holdout', 'holdout')}/`")
        mos = (f"train {stages.get('mos_steps', '?')} steps on `{splits.get('verify', 'verify')}/`, AO on its first "
               f"{stages.get('mos_sequences', '?')} sequences")
    elif config.get("task_name"):
        target = f"{branch_text} of the built-in task `{config['task_name']}`"
        proxy = f"train {task.get('steps', '?')} steps, clean test accuracy"
        mos = f"train {task.get('mos_steps', '?')} steps, accuracy on a clean validation subset"
    else:
        target, proxy, mos = branch_text, "as stored in the task config", "as stored in the task config"
    strategy = search.get("strategy", "?")
    rows = [
        ["searched", f"{target}; fitness = proxy {run.metric}"],
        ["proxy", proxy],
        ["search space", f"`{config.get('space', '?')}`" + (f" ({space.mode}, {len(space.operators)} operators, "
                                                            f"at most {space.max_size} nodes)" if space else "")],
        ["strategy", f"{strategy}: {STRATEGY_TITLES.get(strategy, strategy)}; {search.get('mode', '?')} mode"],
        ["N / E / K / P", " / ".join(str(search.get(k, "?")) for k in ("population", "generations", "top_k", "parents"))
         + " (candidates per generation / generations / MOS survivors to the proxy / parents)"],
        ["crossover p1 / mutation p2", f"{search.get('crossover', '?')} / {search.get('mutation', '?')}"],
    ]
    if config.get("detector") and task.get("train_ann"):
        categories = task.get("categories") or []
        rows.insert(1, ["data", f"{_code(str(task['train_ann']))} (train), {_code(str(task.get('val_ann')))} (val), "
                                f"{len(categories)} categories"])
    if strategy == "cse":
        cap = search.get("max_mos")
        limit = "all survivors" if cap is None else f"at most {cap}"
        rule = search.get("mos_threshold", "previous-best")  # runs stored before the option used the paper's rule
        threshold = ("the reference's MOS score" if rule == "reference"
                     else "the previous generation's best loss's MOS score (the paper's rule)")
        quantile = search.get("mos_quantile")
        distinct = "near-clones not sent on" if search.get("distinct", False) else "near-clones sent on"
        rows.insert(2, ["MOS", f"{mos}; {limit} per generation; threshold {threshold}, margin "
                               f"{search.get('mos_margin', 0.0)}" + (f", at least the generation's {quantile:g}-quantile"
                                                                     if quantile is not None else "") + f"; {distinct}"])
    rows.append(["seed", str(search.get("seed", "?"))])
    if run.start is not None:
        rows.append(["time span", f"{_when(run.start)} to {_when(run.end)} ({duration(run.end - run.start)})"])
    done = sum(1 for g in run.generations if g.finished)
    rows.append(["generations finished", f"{done} of {search.get('generations', '?')}"])
    rows.append(["store", _code(str(run.store_path))])
    return ["## What was searched", ""] + _table(["setting", "value"], rows, ["---", "---"]) + [""]


def _baseline(run: Run, formulas: Describer) -> list[str]:
    lines = ["## Baseline", ""]
    if run.baseline is None:
        return lines + ["No baseline in the store yet.", ""]
    name = formulas.ready_name(run.baseline.genotype)
    described = formulas.describe(run.baseline.genotype)
    scores = []
    for gate in EXPENSIVE:
        evaluation = run.baseline_scores.get(gate)
        if evaluation is None:
            continue
        title = "proxy" if gate == "proxy" else "MOS"
        value = (run.score_text(run.baseline.id, evaluation.fitness) if gate == "proxy"
                 else _f(evaluation.fitness))
        scores.append(f"{title} {run.metric} {value}" if evaluation.fitness is not None
                      else f"{title} failed ({evaluation.kind}: {_cell(evaluation.verdict.reason, 120)})")
    intro = (f"The initial loss{f' {name}' if name else ''}" if _noun(formulas)[0] == "loss"
             else f"The baseline{f' ({name})' if name else ''}")
    lines.append(f"{intro}, trained the same way as every candidate: "
                 + ("; ".join(scores) if scores else "not evaluated yet") + ".")
    sample = run.baseline_sample
    if sample.n > 1:
        lines += ["", f"The proxy's noise: the baseline trained with {sample.n} seeds scored "
                      f"{', '.join(f'{v:.4f}' for v in sample.values)} (mean ± sd {sample.mean:.4f} ± {sample.sd:.4f}); "
                      "a single-shot difference of that size is not evidence. The figures draw it as a band around "
                      "the baseline line."]
    elif sample.n == 1:
        lines += ["", "The baseline ran one seed: the proxy's noise was not measured (`--baseline-seeds 3` "
                      "measures it), so no candidate can be claimed better."]
    lines += ["", *_formula_lines(described, _forms(formulas)), ""]
    if run.reference is not None:
        score = (f"MOS {run.metric} {_f(run.reference.fitness)}" if run.reference.fitness is not None
                 else f"its MOS failed ({run.reference.kind})")
        lines += [f"The first generation's MOS bar is not the baseline's but that of the individual breeding starts "
                  f"from (`--mos-reference initial`): {score}.", "",
                  *_formula_lines(formulas.describe(run.reference.candidate.genotype), _forms(formulas)), ""]
    return lines


def _formula_lines(described: dict, forms: dict | None = None) -> list[str]:
    forms = forms or {"expression": "prefix", "infix": "infix"}
    lines = [f"- {forms['expression']}: {_code(described['expression'])}"]
    if described["infix"]:
        lines.append(f"- {forms['infix']}: {_code(described['infix'])}")
    if described["latex"]:
        lines.append(f"- LaTeX: ${described['latex']}$")
    return lines


def _gate_counts(run: Run) -> list[str]:
    expensive = run.evaluations + list(run.baseline_scores.values())
    rows = []
    for gate in run.gates:
        counts = run.verdict_counts.get(gate, {"verdicts": 0, "passed": 0, "rejected": 0})
        row = [run.titles.get(gate, gate), str(counts["verdicts"]), str(counts["passed"]), str(counts["rejected"])]
        if gate in EXPENSIVE:
            mine = [e for e in expensive if e.gate == gate]
            fresh = [e for e in mine if not e.reused]
            row += [str(len(fresh)), str(len(mine) - len(fresh)), str(sum(1 for e in fresh if e.kind != "ok")),
                    duration(sum(e.verdict.seconds for e in fresh))]
        else:
            row += [str(counts["verdicts"]), "-", "-", "-"]
        rows.append(row)
    lines = ["### Evaluations per gate", "",
             "Verdicts recorded per gate over the whole run (the baseline's included). For MOS and the proxy, "
             "'run' counts trainings actually run, 'reused' a genotype already evaluated earlier (its result "
             "copied), 'failed' the trainings that ended without a fitness; compute time adds up the trainings "
             "(workers run in parallel, so it can exceed the time span). MOS 'passed' counts the candidates "
             "sent on to the proxy.", ""]
    if not rows:
        return lines + ["No verdict recorded yet.", ""]
    return lines + _table(["gate", "verdicts", "passed", "rejected", "run", "reused", "failed", "compute time"],
                          rows) + [""]


def _funnel(run: Run) -> list[str]:
    lines = ["## Gate funnel per generation", "",
             "Each cell is *in / rejected*: the candidates that reached the gate and those it stopped (a "
             "candidate stops at its first rejection; MOS rejects those below the previous generation's best "
             "MOS score or outside the top K, and its failed trainings). For the proxy, *in / failed*: the "
             "candidates trained on the proxy and those whose training failed. 'not evaluated further': "
             "passed every gate they met but went no further (the per-generation MOS cap, or a run stopped "
             "mid-generation). The *duplicates* column's second number: the duplicates removed that "
             "generation, candidates that train like one already evaluated (the baseline included), never "
             "evaluated again.", ""]
    if not run.generations:
        return lines + ["No generation bred yet.", ""]
    gates = list(run.gates) or run.pipeline[:1]
    header = ["generation", "bred"] + [run.titles.get(g, g) for g in gates] + ["not evaluated further", "state"]
    rows, totals = [], {g: [0, 0] for g in gates}
    for generation in run.generations:
        row = [str(generation.shown), str(generation.bred)]
        for gate in gates:
            counts = generation.funnel.get(gate)
            row.append("-" if counts is None else f"{counts['in']} / {counts['failed']}")
            if counts:
                totals[gate][0] += counts["in"]
                totals[gate][1] += counts["failed"]
        row += [str(max(generation.stopped, 0)), "finished" if generation.finished else "unfinished"]
        rows.append(row)
    rows.append(["**all**", str(sum(g.bred for g in run.generations))]
                + [f"{totals[g][0]} / {totals[g][1]}" for g in gates]
                + [str(sum(max(g.stopped, 0) for g in run.generations)), ""])
    align = ["---"] + ["---:"] * (len(header) - 2) + ["---"]
    return lines + _table(header, rows, align) + ["", f"![Gate funnel per generation]({FIGURES['funnel']})", ""]


def _fitness(run: Run, formulas: Describer) -> list[str]:
    base = run.baseline_fitness
    thresholds = any(g.mos_threshold is not None for g in run.generations)
    lines = ["## Proxy fitness per generation", "",
             f"Proxy {run.metric} of the candidates of each generation (best and median of those with a "
             f"result, one seed each), the best of the hall of fame so far and its difference to the baseline "
             f"({run.score_text(run.baseline.id, base) if run.baseline else _f(base)})."
             + (" The MOS threshold is the bar a candidate's MOS score had to reach." if thresholds else ""), ""]
    if not run.generations:
        return lines + ["No generation bred yet.", ""]
    rows = []
    for g in run.generations:
        best = g.best
        failed = sum(1 for e in g.proxy if e.fitness is None)
        note = "" if g.fitnesses else ("no proxy result" if g.finished else "no proxy result yet")
        rows.append([str(g.shown), f"{len(g.fitnesses)} / {failed}", _f(best.fitness if best else None),
                     _f(g.median), _f(g.best_so_far),
                     _f(g.best_so_far - base if g.best_so_far is not None and base is not None else None, sign=True)]
                    + ([_f(g.mos_threshold)] if thresholds else [])
                    + [_code(_cell(formulas.infix(best.candidate.genotype), 90)) if best else note])
    header = (["generation", "results (ok / failed)", "best", "median", "best so far", "best so far - baseline"]
              + (["MOS threshold"] if thresholds else [])
              + [f"best {_noun(formulas)[0]} of the generation ({_forms(formulas)['infix']})"])
    align = ["---"] + ["---:"] * (len(header) - 2) + ["---"]
    return lines + _table(header, rows, align) + ["", f"![Proxy fitness per generation]({FIGURES['fitness']})", ""]


def _over_time(run: Run) -> list[str]:
    text = ("Every MOS and proxy training in the order it finished (one point per candidate; a genotype "
            "already evaluated is not trained again and not drawn). Top: proxy results with the best so "
            "far and the baseline; bottom (CSE only): MOS scores, filled when the candidate passed MOS (in "
            "a finished generation: was sent on to the proxy). Crosses in the strip at the bottom of a panel "
            "are trainings that failed (diverged, timed out, crashed or raised).")
    return ["## Candidates over the search", "", text, "", f"![Candidates over the search]({FIGURES['time']})", ""]


def _top(run: Run, formulas: Describer, pictures: dict[str, str] | None = None) -> list[str]:
    base = run.baseline_fitness
    noun, plural = _noun(formulas)
    forms = _forms(formulas)
    lines = [f"## Top {len(run.top)} {plural}" if run.top else f"## Top {plural}", ""]
    if not run.top:
        return lines + ["No searched candidate has a proxy result yet.", ""]
    lines += [f"Ranked by proxy {run.metric} (the mean over a candidate's seeds where it has several: mean ± sd "
              f"(seeds)), each genotype once; the difference is to the baseline's "
              f"{run.score_text(run.baseline.id, base) if run.baseline else _f(base)}. 'evidence': the candidate's "
              f"fresh seeds (those after the one that ranked it) against the baseline's ({evidence.method_text()}).",
              ""]
    rows = []
    for rank, (row, proxy, mos) in enumerate(run.top, 1):
        fitness = run.fitness_of(row.id, proxy.metrics.get("fitness"))
        rows.append([str(rank), run.score_text(row.id, proxy.metrics.get("fitness")),
                     _f(fitness - base if base is not None and fitness is not None else None, sign=True),
                     _f(mos.metrics.get("fitness") if mos and mos.status == "ok" else None), str(row.generation + 1),
                     _cell(_evidence(run, row.id), 90), _code(_cell(formulas.infix(row.genotype), 100))])
    lines += _table(["rank", f"proxy {run.metric}", "vs baseline", f"MOS {run.metric}", "generation", "evidence",
                     forms["infix"]], rows, ["---:"] * 5 + ["---", "---"]) + [""]
    for rank, (row, proxy, mos) in enumerate(run.top, 1):
        name = formulas.ready_name(row.genotype)
        origin = f", bred by {row.origin}" if row.origin else ""
        claim = _claim_text(run, row.id)
        lines += [f"**{rank}.** proxy {run.metric} {run.score_text(row.id, proxy.metrics.get('fitness'))}, generation "
                  f"{row.generation + 1} #{row.index}{origin}{f' (the ready loss {name})' if name else ''}"
                  + (f"; {claim}" if claim else ""), "",
                  *_formula_lines(formulas.describe(row.genotype), forms), ""]
        if pictures and row.genotype in pictures:
            lines += [f"![{noun} {rank}]({pictures[row.genotype]})", ""]
    return lines


def _evidence(run: Run, candidate_id: int) -> str:
    """The claim in a word or two: better / worse / not distinguishable (fresh seeds), or unconfirmed."""
    claim = run.claims.get(candidate_id)
    if run.baseline_sample.n == 0:
        return "-"
    if claim is None or claim.candidate.n == 0:
        return "unconfirmed (one seed)"
    diff = f"{claim.difference:+.4f} ± {claim.se:.4f}" if claim.se is not None else f"{claim.difference:+.4f}"
    return f"{claim.verdict} ({diff}, {claim.seeds_text()})"


def _claim_text(run: Run, candidate_id: int) -> str:
    claim = run.claims.get(candidate_id)
    if claim is None or claim.candidate.n == 0 or run.baseline_sample.n == 0:
        return ""
    return claim.text()


def _failures(run: Run) -> list[str]:
    lines = ["## Failed evaluations", ""]
    failed = run.failures
    if not failed:
        return lines + ["None: every MOS and proxy training that ran returned a finite fitness.", ""]
    groups: OrderedDict[tuple, list[Evaluation]] = OrderedDict()
    for e in failed:
        pattern = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", e.verdict.reason)
        groups.setdefault((e.gate, e.kind, pattern), []).append(e)
    rows = []
    for (gate, kind, _), members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        names = ", ".join(_candidate_name(e) for e in members[:5]) + (", ..." if len(members) > 5 else "")
        rows.append([run.titles.get(gate, gate), kind, str(len(members)), _cell(members[0].verdict.reason), names])
    lines += [f"{len(failed)} trainings ended without a fitness, grouped by reason (reasons that differ only in "
              "their numbers are one group; the first is shown). Logs: `RUN_DIR/work/<stage>/` for detector runs.",
              ""]
    return lines + _table(["stage", "kind", "count", "reason", "candidates"], rows,
                          ["---", "---", "---:", "---", "---"]) + [""]


def _headline(run: Run, formulas: Describer) -> str:
    """The report's first claim: what was confirmed better than the baseline, with its interval and test, or
    plainly that nothing can be told from the baseline (and with how many seeds)."""
    noun = _noun(formulas)[0]
    base = run.baseline_sample
    if run.baseline is None or run.baseline_fitness is None:
        return f"**No claim**: the baseline has no proxy {run.metric}, so no {noun} can be compared with it."
    confirmed = [(cid, claim) for cid, claim in run.claims.items() if claim.better]
    test = (f"{evidence.TEST} t-test at level {evidence.ALPHA:g} on fresh seeds, the seed that ranked a candidate "
            "left out, p Holm-adjusted over the candidates tested; ± is one standard error of the difference")
    if confirmed:
        cid, claim = max(confirmed, key=lambda item: item[1].candidate.mean)
        row = next((c for c, _, _ in run.top if c.id == cid), None)
        where = f" (candidate {cid})"
        if row is not None:
            infix = formulas.describe(row.genotype).get("infix")
            where = f" of generation {row.generation + 1} #{row.index}" + (f", {_code(infix)}" if infix else "")
        return (f"**Confirmed better than the baseline**: the {noun}{where}, proxy {run.metric} "
                f"{claim.candidate.mean:.4f} ± {claim.candidate.sd:.4f} over {claim.seeds_text()} against the "
                f"baseline's {base.text()}: difference {claim.difference:+.4f} ± {claim.se:.4f}, "
                f"{claim.bound_text()}, p = {claim.p:.3g}"
                + (f" (Holm-adjusted {claim.p_adjusted:.3g})" if claim.family > 1 else "") + f" ({test}).")
    tried = [(cid, claim) for cid, claim in run.claims.items() if claim.candidate.n]
    if not tried:
        noise = (f"the baseline's own spread over {base.n} seeds is ± {base.sd:.4f} sd" if base.sd is not None
                 else "the proxy's noise was not measured (one baseline seed)")
        return (f"**Nothing confirmed**: no {noun} was retrained with fresh seeds (confirmation off or not reached), "
                f"so none is claimed better than the baseline; every searched score below is one seed, and "
                f"{noise}.")
    cid, claim = max(tried, key=lambda item: (item[1].candidate.mean, -item[0]))
    return (f"**Nothing confirmed better than the baseline**: the best {noun} retrained with fresh seeds (candidate "
            f"{cid}) is {claim.text()} ({test}).")


def render(run: Run, formulas: Describer, pictures: dict[str, str] | None = None) -> str:
    """The whole report.md (``pictures``: genotype -> the relative path of its drawing, shown with the top list)."""
    best = run.top[0] if run.top else None
    head = [f"# Search report: {run.run_dir.name or run.run_dir}", "",
            f"Written by `autoloss report` on {_when(time.time())} from {_code(str(run.store_path))}."]
    if best is not None:
        fitness = run.fitness_of(best[0].id, best[1].metrics.get("fitness"))
        base = run.baseline_fitness
        base_text = run.score_text(run.baseline.id, base) if run.baseline is not None else _f(base)
        delta = f" ({fitness - base:+.4f} against the baseline's {base_text})" if base is not None else ""
        described = formulas.describe(best[0].genotype)
        shown = _code(described["infix"]) if described.get("infix") else (
            f"{_code(best[0].genotype[:200])} (stored text that does not parse in the run's space)")
        fitness_text = run.score_text(best[0].id, best[1].metrics.get("fitness"))
        head += ["", _headline(run, formulas), ""]
        if base is not None and fitness <= base:
            head.append(f"**No candidate beat the baseline**: the baseline remains the best. The best candidate "
                        f"scored proxy {run.metric} {fitness_text}{delta}, generation {best[0].generation + 1}: "
                        f"{shown}.")
        else:
            kind = run.config.get("representation") or "loss"
            noun = kind if kind in ("loss", "cell") else "candidate"
            head.append(f"Best {noun} found: proxy {run.metric} {fitness_text}{delta}, generation "
                        f"{best[0].generation + 1}: {shown}.")
    head.append("")
    notes = list(run.notes) + ([formulas.problem] if formulas.problem else [])
    if notes:
        head += ["## What is missing", ""] + [f"- {note}" for note in notes] + [""]
    sections = [head, _what(run, formulas), _gate_counts(run), _baseline(run, formulas), _funnel(run),
                _fitness(run, formulas), _over_time(run), _top(run, formulas, pictures), _failures(run)]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"
