"""How reliable is a detector proxy? A fixed panel of classification losses per head, each trained on
several seeds, and what the panel's ranking says about the proxy.

For each head (``softmax``: ``faster_rcnn_small`` in ``cls_softmax``; ``sigmoid``: ``fcos_small`` in
``cls_sigmoid``) the panel is trained with ``--seeds`` seeds on the search's own proxy stage (the
synthetic demo data, the IoU-aware head, the searched branch in place of the config's loss) and on
its MOS stage (D_verify). Reported per loss: the proxy's mean and sd over the seeds and the MOS
score; per panel:

* the seed-to-seed Spearman: the rank correlation between the panel's scores on seed i and on seed j
  (mean and minimum over the pairs): does the proxy rank the losses the same way twice?
* the MOS-to-proxy Spearman: the MOS means against the proxy means;
* the panel's spread (best mean minus worst) over the median sd: how many noise widths the losses span;
* for the sigmoid panel, FL against BCE: the difference of the means over their pooled sd.

Panels: softmax: CE, CEI, CSE-Autoloss-A_cls, the MAE-like ``-p``, CE on doubled logits, a
label-smoothing-like CE, and ``--random`` valid random trees of the space (seeded; through the
search's cheap gates); sigmoid: BCE, BCE weighted by the IoU, FL, FLI, CSE-Autoloss-B_cls and the
random trees.

Every finished run is kept in ``OUT/<head>/<setting>/runs.jsonl`` (``<setting>`` names the detector,
iterations and data): rerunning redoes only the missing runs. The section ``proxy-panel`` of
docs/benchmarks.md and the figure docs/benchmark_proxy.png are rewritten at the end::

    python3 scripts/benchmark_proxy.py                        # both heads, 3 seeds (about 1.5 h, 2 cores)
    python3 scripts/benchmark_proxy.py --head sigmoid          # one head
    python3 scripts/benchmark_proxy.py --tiny --no-write       # a few iterations: the pipeline end to end
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_report import write_section  # noqa: E402

from autoloss.detection.presets import PRESETS  # noqa: E402

HEADS = {
    "softmax": {"detector": "faster_rcnn_small", "space": "cls_softmax", "losses": (
        ("CE", "CE"), ("CEI", "CEI"), ("CSE-Autoloss-A_cls", "CSE-Autoloss-A_cls"),
        ("MAE-like -p", "Neg(Dot(Y,Softmax(X)))"),
        ("CE, doubled logits", "Neg(Dot(Y,Log(Softmax(Add(X,X)))))"),
        ("label-smoothing-like", "Neg(Dot(Add(Y,Div(1,Mul(3,3))),Log(Softmax(X))))"))},
    "sigmoid": {"detector": "fcos_small", "space": "cls_sigmoid", "losses": (
        ("BCE", "Neg(Add(Mul(Y,Log(Sig(X))),Mul(Sub(1,Y),Log(Sub(1,Sig(X))))))"),
        ("BCE x IoU", "Neg(Add(Mul(W,Log(Sig(X))),Mul(Sub(1,Y),Log(Sub(1,Sig(X))))))"),
        ("FL", "FL"), ("FLI", "FLI"), ("CSE-Autoloss-B_cls", "CSE-Autoloss-B_cls"))},
}
DEMO = {"proxy_iters": 200, "mos_iters": 30}
TINY = {"proxy_iters": 2, "mos_iters": 2}
# the synthetic data: the demo's, and a harder one where the loss on negatives matters more (unannotated distractor
# shapes, smaller and more objects) with a larger validation split (autoloss.detection.synthetic.PRESETS)
DATA = {"demo": {}, "clutter": dict(PRESETS["clutter"])}


# ------------------------------------------------------------------------------------------ the panel


def panel(head: str, random_trees: int, seed: int = 0, first: int | None = None) -> list[tuple[str, str]]:
    """``[(name, expression)]``: the head's named losses (a space's ready loss by its name; ``first``: only
    the first ones), then ``random_trees`` seeded random trees that pass the search's cheap gates and
    differ from the others."""
    from autoloss.loss.representation import LossRepresentation
    from autoloss.loss.space import load_space

    spec = HEADS[head]
    space = load_space(spec["space"])
    representation = LossRepresentation(space)
    named = spec["losses"][:first] if first else spec["losses"]
    losses = [(name, space.losses.get(text, text)) for name, text in named]
    seen = {representation.key(representation.parse(text)) for _, text in losses}
    gates = representation.gates()
    rng = random.Random(seed)
    try:
        for _ in range(40):  # batches of fresh random trees, screened in order, until enough pass (about 1 in 150)
            if len(losses) >= len(named) + random_trees:
                break
            batch = []
            while len(batch) < 200:
                node = representation.operators.random(rng, min_height=2, max_height=4)
                if representation.key(node) not in seen:
                    seen.add(representation.key(node))
                    batch.append(node)
            for gate in gates:
                batch = [node for node, verdict in zip(batch, gate.evaluate(batch)) if verdict.passed]
            for node in batch[:len(named) + random_trees - len(losses)]:
                losses.append((f"random {len(losses) - len(named) + 1}", representation.key(node)))
    finally:
        for gate in gates:
            getattr(gate, "close", lambda: None)()
    return losses


# ------------------------------------------------------------------------------------------ statistics


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks on ties); None when either side is constant."""
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def panel_figures(rows: dict[str, dict], seeds: list[int], learned_only: bool = False) -> dict:
    """The panel's reliability figures from ``rows``: name -> {"proxy": {seed: score}, "mos": {seed: score}}.
    ``learned_only``: only the losses whose proxy mean is above 0 (a loss that taught the detector nothing
    is easy to rank last on every seed, which lifts the correlations without telling good losses apart);
    then also under ``"learned"``."""
    if not learned_only:
        learned = {n: r for n, r in rows.items() if r["proxy"] and statistics.fmean(r["proxy"].values()) > 0}
        found = panel_figures(rows, seeds, learned_only=True)
        found["learned"] = panel_figures(learned, seeds, learned_only=True) if len(learned) < len(rows) else None
        return found
    names = [n for n in rows if all(s in rows[n]["proxy"] for s in seeds)]
    pairs = []
    for i, a in enumerate(seeds):
        for b in seeds[i + 1:]:
            found = spearman([rows[n]["proxy"][a] for n in names], [rows[n]["proxy"][b] for n in names])
            if found is not None:
                pairs.append(found)
    means = {n: statistics.fmean(rows[n]["proxy"].values()) for n in rows if rows[n]["proxy"]}
    sds = {n: statistics.stdev(rows[n]["proxy"].values()) for n in rows if len(rows[n]["proxy"]) > 1}
    mos = {n: statistics.fmean(rows[n]["mos"].values()) for n in rows if rows[n]["mos"]}
    both = [n for n in means if n in mos]
    median_sd = statistics.median(sds.values()) if sds else None
    spread = max(means.values()) - min(means.values()) if len(means) > 1 else None
    return {"losses": len(names), "seed_spearman_mean": statistics.fmean(pairs) if pairs else None,
            "seed_spearman_min": min(pairs) if pairs else None, "pairs": len(pairs),
            "mos_spearman": spearman([mos[n] for n in both], [means[n] for n in both]),
            "spread": spread, "median_sd": median_sd,
            "spread_over_sd": spread / median_sd if spread is not None and median_sd else None,
            "means": means, "sds": sds, "mos": mos}


def separation(rows: dict[str, dict], a: str, b: str) -> float | None:
    """(mean of ``b`` - mean of ``a``) over their pooled sd (None without two seeds each)."""
    x, y = list(rows.get(a, {}).get("proxy", {}).values()), list(rows.get(b, {}).get("proxy", {}).values())
    if len(x) < 2 or len(y) < 2:
        return None
    pooled = (((len(x) - 1) * statistics.variance(x) + (len(y) - 1) * statistics.variance(y))
              / (len(x) + len(y) - 2)) ** 0.5
    diff = statistics.fmean(y) - statistics.fmean(x)
    return diff / pooled if pooled else (float("inf") if diff else 0.0)


# ------------------------------------------------------------------------------------------ running


def setting_key(head: str, iters: dict, data: dict) -> str:
    text = json.dumps({"head": head, "detector": HEADS[head]["detector"], **iters, "data": data}, sort_keys=True)
    return f"{HEADS[head]['detector']}-{iters['proxy_iters']}it-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def run_head(head: str, out: Path, seeds: list[int], iters: dict, random_trees: int, workers: int,
             data_options: dict, first: int | None = None, pretrain: bool = False, tiny: bool = False) -> dict:
    """Train the head's panel (what is not in ``runs.jsonl`` yet); its rows and figures."""
    from autoloss.detection.synthetic import make_synthetic_coco
    from autoloss.detection.task import evaluate, prepare_task
    from autoloss.engine.executors import Job, make_executor

    spec = HEADS[head]
    data_dir = out / ("data" if not data_options else "data-" + hashlib.sha256(
        json.dumps(data_options, sort_keys=True).encode()).hexdigest()[:8])
    made = make_synthetic_coco(str(data_dir), **data_options)
    from autoloss.detection.pretrain import PretrainSettings

    settings = PretrainSettings(steps=2, batch=4, crop=16) if tiny else PretrainSettings()
    folder = out / head / setting_key(head, iters, {k: made[k] for k in ("num_train", "num_val", "categories")}
                                      | {k: list(v) if isinstance(v, tuple) else v for k, v in data_options.items()}
                                      | ({"pretrain": str(settings)} if pretrain else {}))
    folder.mkdir(parents=True, exist_ok=True)
    task, summary = prepare_task(spec["detector"], "cls", str(data_dir), folder, space=spec["space"],
                                 proxy_iters=iters["proxy_iters"], mos_iters=iters["mos_iters"], check_build=False,
                                 pretrain=settings if pretrain else None, progress=print)
    losses = panel(head, random_trees, first=first)
    log = folder / "runs.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
                done[(row["expression"], row["stage"], row["seed"])] = row
            except (ValueError, KeyError):
                continue  # a line cut short by a kill: run it again
    todo = [(name, text, stage, seed) for name, text in losses for stage in ("mos", "proxy") for seed in seeds
            if (text, stage, seed) not in done]
    print(f"{head}: {len(losses)} losses x {len(seeds)} seeds x 2 stages; {len(todo)} runs to go", flush=True)
    if todo:
        executor = make_executor("local", workers=workers, start_method="spawn")
        task_dict = task.to_dict()
        jobs = (Job(evaluate, task_dict, text, stage, seed) for _, text, stage, seed in todo)
        try:
            with log.open("a") as handle:
                for index, _, outcome in executor.stream(jobs, timeout=3 * 3600.0):
                    name, text, stage, seed = todo[index]
                    row = {"name": name, "expression": text, "stage": stage, "seed": seed,
                           "seconds": round(outcome.seconds, 1)}
                    if outcome.ok:
                        row["fitness"] = float(outcome.value["fitness"])
                    else:
                        row["error"] = (outcome.error or outcome.status)[:300]
                    handle.write(json.dumps(row) + "\n")
                    handle.flush()
                    done[(text, stage, seed)] = row
                    print(f"  {head} {name} {stage} seed {seed}: {row.get('fitness', row.get('error'))} "
                          f"({row['seconds']:.0f} s)", flush=True)
        finally:
            executor.close()
    rows = {}
    for name, text in losses:
        rows[name] = {"expression": text, "proxy": {}, "mos": {}, "errors": []}
        for stage in ("mos", "proxy"):
            for seed in seeds:
                found = done.get((text, stage, seed))
                if found is None:
                    continue
                if "fitness" in found:
                    rows[name][stage][seed] = found["fitness"]
                else:
                    rows[name]["errors"].append(f"{stage} seed {seed}: {found['error']}")
    seconds = [r["seconds"] for r in done.values() if r.get("stage") == "proxy" and "fitness" in r]
    return {"head": head, "detector": spec["detector"], "setting": folder.name, "iters": iters,
            "backbone": summary["backbone"],
            "data": {k: made[k] for k in ("num_train", "num_val", "categories")} | data_options, "rows": rows,
            "figures": panel_figures(rows, seeds),
            "fl_over_bce": separation(rows, "BCE", "FL") if head == "sigmoid" else None,
            "proxy_seconds": statistics.fmean(seconds) if seconds else None}


# ------------------------------------------------------------------------------------------ output


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def section(results: list[dict], seeds: list[int], load: str) -> str:
    lines = [f"Each loss of the panel trained with seeds {', '.join(map(str, seeds))} on the search's proxy stage "
             "(and its MOS stage on D_verify), the classification branch only (the config's regression loss kept), "
             f"mAP in %. Load average when this run of the script started: {load}.", ""]
    targets = "targets (issue 23): seed-to-seed Spearman >= 0.8, MOS-to-proxy >= 0.6, FL - BCE > 3 pooled sd"
    for result in results:
        fig = result["figures"]
        lines += [f"### {result['head']} head: {result['detector']}, {result['iters']['proxy_iters']} proxy "
                  f"iterations, MOS {result['iters']['mos_iters']}; {result['data']['num_train']} train / "
                  f"{result['data']['num_val']} val images, {len(result['data']['categories'])} categories"
                  f"{describe_data(result['data'])}; backbone {result['backbone']}", "",
                  "| loss | proxy mAP mean ± sd (n) | MOS mAP mean | expression |", "|---|---:|---:|---|"]
        for name, row in result["rows"].items():
            proxy = list(row["proxy"].values())
            cell = (f"{100 * statistics.fmean(proxy):.1f} ± "
                    f"{100 * statistics.stdev(proxy) if len(proxy) > 1 else float('nan'):.1f} ({len(proxy)})"
                    if proxy else "-")
            mos = list(row["mos"].values())
            failed = f" ({len(row['errors'])} failed)" if row["errors"] else ""
            lines.append(f"| {name}{failed} | {cell} | {100 * statistics.fmean(mos) if mos else float('nan'):.1f} | "
                         f"`{row['expression']}` |")
        lines += ["", f"- seed-to-seed Spearman of the panel's ranking: mean {_num(fig['seed_spearman_mean'])}, "
                      f"min {_num(fig['seed_spearman_min'])} over {fig['pairs']} pair(s) of seeds",
                  f"- MOS-to-proxy Spearman (means): {_num(fig['mos_spearman'])}",
                  f"- spread of the panel's means {_num(100 * fig['spread'] if fig['spread'] is not None else None, 1)}"
                  f" AP over the median sd {_num(100 * fig['median_sd'] if fig['median_sd'] is not None else None, 1)}"
                  f" AP: {_num(fig['spread_over_sd'])}"]
        learned = fig.get("learned")
        if learned:
            lines.append(f"- among the {learned['losses']} losses that learned something (proxy mean above 0): "
                         f"seed-to-seed Spearman mean {_num(learned['seed_spearman_mean'])}, min "
                         f"{_num(learned['seed_spearman_min'])}; MOS-to-proxy {_num(learned['mos_spearman'])}; spread "
                         f"over median sd {_num(learned['spread_over_sd'])}")
        if result["head"] == "sigmoid":
            lines.append(f"- FL - BCE: {_num(result['fl_over_bce'])} pooled sd")
        if result["proxy_seconds"] is not None:
            lines.append(f"- one proxy training: {result['proxy_seconds']:.0f} s on average")
        lines.append("")
    lines.append(f"Against the {targets}.")
    return "\n".join(lines) + "\n"


def describe_data(data: dict) -> str:
    """The harder data's options in words ('' for the demo's data)."""
    words = []
    if data.get("max_objects"):
        words.append(f"1-{data['max_objects']} objects per image")
    if data.get("sizes"):
        words.append(f"sides {data['sizes'][0]}-{data['sizes'][1]} px")
    if data.get("distractors"):
        words.append(f"0-{data['distractors']} unannotated distractor shapes per image")
    return f" ({', '.join(words)})" if words else ""


def figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autoloss.files import write_atomic

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, result in zip(axes[0], results):
        names = list(result["rows"])
        means = [100 * result["figures"]["means"].get(n, float("nan")) for n in names]
        sds = [100 * result["figures"]["sds"].get(n, 0.0) for n in names]
        ax.errorbar(range(len(names)), means, yerr=sds, fmt="o", capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("proxy mAP (%), mean ± sd over seeds")
        ax.set_title(f"{result['head']}: {result['detector']}, {result['iters']['proxy_iters']} iterations")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(path, lambda file: fig.savefig(file, dpi=110, format="png"))
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--head", action="append", choices=tuple(HEADS), help="these heads only (repeatable)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--random", type=int, default=4, help="valid random trees per panel (default 4)")
    parser.add_argument("--proxy-iters", type=int, help=f"default: the demo's {DEMO['proxy_iters']}")
    parser.add_argument("--mos-iters", type=int, help=f"default: the demo's {DEMO['mos_iters']}")
    parser.add_argument("--first", type=int, help="only the first N named losses of each panel (tests)")
    parser.add_argument("--pretrain", action="store_true",
                        help="start the backbone from a ResNet pretrained on the training split's objects "
                             "(autoloss.detection.pretrain; as search --pretrain-backbone)")
    parser.add_argument("--data", choices=tuple(DATA), default="demo",
                        help="the synthetic data: the demo's, or 'clutter' (distractors, smaller and more objects, 256 train / 64 "
                             "val images)")
    parser.add_argument("--tiny", action="store_true", help="2 iterations, a small dataset: the pipeline only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/benchmark-proxy", help="where the runs are kept (resumable)")
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--figure", help="default: docs/benchmark_proxy.png (with --pretrain: "
                                         "docs/benchmark_proxy_pretrain.png)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--no-write", action="store_true", help="print; leave docs/ alone")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (the figures compare seeds)")
    base = TINY if args.tiny else DEMO
    iters = {"proxy_iters": args.proxy_iters or base["proxy_iters"], "mos_iters": args.mos_iters or base["mos_iters"]}
    data_options = dict(DATA[args.data]) | ({"num_train": 8, "num_val": 4} if args.tiny else {})
    seeds = list(range(args.seeds))
    import os

    load = f"{os.getloadavg()[0]:.1f} (1-min average, 2 cores)"
    started = time.perf_counter()
    results = [run_head(head, Path(args.out), seeds, iters, args.random, args.workers, data_options, args.first,
                        args.pretrain, args.tiny)
               for head in (args.head or HEADS)]
    text = section(results, seeds, load) + (f"\nThis run of the script: {time.perf_counter() - started:.0f} s (runs kept "
                                            "by an earlier run are not redone).\n")
    print(text)
    if args.json:
        from autoloss.files import write_atomic

        write_atomic(args.json, json.dumps(results, indent=2, default=str))
    if not args.no_write:  # one section (and figure) per backbone setting, so attempts sit side by side
        suffix = ("_pretrain" if args.pretrain else "") + ("" if args.data == "demo" else f"_{args.data}")
        suffix += "" if iters == DEMO else f"_{iters['proxy_iters']}it"
        args.figure = args.figure or str(ROOT / "docs" / f"benchmark_proxy{suffix}.png")
        figure(results, Path(args.figure))
        command = ("python3 scripts/benchmark_proxy.py" + (f" --head {' --head '.join(args.head)}" if args.head else "")
                   + (" --pretrain" if args.pretrain else "") + ("" if args.data == "demo" else f" --data {args.data}")
                   + ("" if iters == DEMO else f" --proxy-iters {iters['proxy_iters']} --mos-iters {iters['mos_iters']}"))
        write_section(Path(args.markdown), "proxy-panel" + suffix.replace("_", "-"),
                      "Proxy reliability: a panel of losses over seeds"
                      + (", backbone pretrained on the data's objects" if args.pretrain else "")
                      + ("" if args.data == "demo" else f", the '{args.data}' data"),
                      text + f"\n![the panels' means ± sd]({Path(args.figure).name})\n", command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
