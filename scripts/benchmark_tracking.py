"""Speed of the tracking proxy: training steps, tracking frames per second, the cell's share of a step.

On the demo settings (``TrackingSettings()``) and the synthetic splits they name: trains (or re-uses)
the baseline tracker, then for the hand neck and DARTS_V2's normal cell measures the search regime's
training step (adapters + neck + classifier on the cached backbone maps, forward and backward), the
neck's forward and backward alone on the same inputs (its share of the step), the backbone forward
the cache saves, one ``evaluate_neck`` (seconds, AO on the hold-out split) and OPE speed; and the
trained baseline's AO on the test split against a tracker that stays at the first box. Figures are
printed and written to docs/benchmarks.md (section "Tracking proxy speed").
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from autoloss.tracking.sampling import SampleBatch  # noqa: E402
from autoloss.tracking.tracker import StaticTracker  # noqa: E402
from autoloss.tracking.train import (  # noqa: E402
    TrackingSettings,
    batch_images,
    classification_loss,
    evaluate_neck,
    load_baseline,
    make_sampler,
    make_tracker,
    prepare_synthetic_data,
    search_maps,
    track_split,
    train_baseline,
    train_search,
)
from benchmark_report import write_section  # noqa: E402

DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5])"
)


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def step_timings(net, entry: dict, settings: TrackingSettings, repeats: int) -> dict:
    """Seconds of one search-regime step, and of the neck's forward + backward alone on the same inputs."""
    stride8, stride16 = entry["stride8"].float(), entry["stride16"].float()
    batch = SampleBatch(None, entry["train_boxes"], None, entry["test_boxes"])
    net.train()
    net.backbone.eval()

    def full_step():
        net.zero_grad(set_to_none=True)
        classification_loss(net, stride8, stride16, batch, settings).backward()

    with torch.no_grad():
        s0, s1 = net.adapters(stride8, stride16)
    upstream = torch.randn(s0.shape[0], net.neck.out_channels, *s0.shape[2:])

    def neck_alone():
        a, b = s0.clone().requires_grad_(), s1.clone().requires_grad_()
        net.neck.zero_grad(set_to_none=True)
        net.neck(a, b).backward(upstream)

    return {"step": median_seconds(full_step, repeats), "neck": median_seconds(neck_alone, repeats)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/autoloss-tracking-benchmark", help="synthetic data and the baseline")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="search-regime seeds per neck (the proxy's spread)")
    parser.add_argument("--report", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    settings = TrackingSettings(threads=args.threads)
    torch.set_num_threads(args.threads)
    data = prepare_synthetic_data(settings, args.data)
    start = time.perf_counter()
    baseline = train_baseline(settings, data, data / "baseline.pt", log=print)
    baseline_seconds = time.perf_counter() - start
    net = load_baseline(settings, baseline)
    print(f"baseline ready in {baseline_seconds:.0f} s")

    # the whole network's step (the baseline regime) and the backbone forward the search cache saves
    sampler = make_sampler(settings, data, seed=0)
    base_batch = sampler.batch(0, settings.baseline_batch)
    search_batch = sampler.batch(0, settings.batch)

    def baseline_step():
        net.train()
        net.zero_grad(set_to_none=True)
        stride8, stride16 = net.backbone_maps(batch_images(base_batch))
        classification_loss(net, stride8, stride16, base_batch, settings).backward()

    baseline_step_s = median_seconds(baseline_step, max(3, args.repeats // 3))
    net.eval()
    with torch.no_grad():
        backbone_s = median_seconds(lambda: net.backbone_maps(batch_images(search_batch)), max(3, args.repeats // 3))

    static = track_split(StaticTracker(), data, "test")
    tracked = track_split(make_tracker(load_baseline(settings, baseline), settings), data, "test")
    print(f"test split: baseline AO {tracked['ao']:.3f} (SR0.5 {tracked['sr50']:.3f}), static AO {static['ao']:.3f}")

    rows = []
    for name, spec in (("hand neck", "hand"), ("DARTS_V2 cell", DARTS_V2)):
        trained, _ = train_search(settings, data, baseline, spec, seed=0)
        entry = search_maps(trained, settings, data, baseline, seed=0)[0]
        times = step_timings(trained, entry, settings, args.repeats)
        result = evaluate_neck(settings, data, baseline, spec, split="holdout", seed=0)
        again = evaluate_neck(settings, data, baseline, spec, split="holdout", seed=0)
        seeded = [result["ao"]] + [evaluate_neck(settings, data, baseline, spec, "holdout", seed)["ao"] for seed in range(1, args.seeds)]
        neck_params = sum(p.numel() for p in trained.neck.parameters())
        rows.append((name, neck_params, times, result, again["ao"] == result["ao"], seeded))
        print(f"{name}: step {times['step'] * 1000:.1f} ms, neck {times['neck'] * 1000:.1f} ms, "
              f"evaluate_neck {result['seconds']:.1f} s, hold-out AO {result['ao']:.3f}, {result['fps']:.1f} fps")

    frames = 2 * settings.frames * settings.batch
    lines = [
        f"Demo settings (`TrackingSettings()`): ResNet-{settings.depth} to stride 16, C = {settings.channels}, crops "
        f"{settings.crop_size} px ({settings.map_size} x {settings.map_size} maps), {settings.frames} + {settings.frames} "
        f"frames per sample; baseline {settings.baseline_steps} steps of batch {settings.baseline_batch}; search regime "
        f"{settings.steps} steps of batch {settings.batch} ({frames} crops) over {settings.pool} cached batches; "
        f"synthetic splits: {settings.weights_sequences} weights, {settings.holdout_sequences} hold-out, "
        f"{settings.test_sequences} test sequences of {settings.sequence_frames} frames.",
        f"Machine: {torch.get_num_threads()} torch threads, {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}; load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        f"(other work on the machine slows every figure; the AOs do not depend on it).",
        "",
        "| neck | neck parameters | search step (ms) | neck fwd+bwd alone (ms) | neck share of the step | "
        f"evaluate_neck (s) | hold-out AO, seed 0 | same AO twice | AO over {args.seeds} seeds | tracking fps |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for name, params, times, result, repeatable, seeded in rows:
        spread = f"{statistics.mean(seeded):.3f} +- {statistics.stdev(seeded):.3f}" if len(seeded) > 1 else "-"
        lines.append(
            f"| {name} | {params:,} | {times['step'] * 1000:.1f} | {times['neck'] * 1000:.1f} | "
            f"{times['neck'] / times['step']:.0%} | {result['seconds']:.1f} | {result['ao']:.3f} | "
            f"{'yes' if repeatable else 'NO'} | {spread} | {result['fps']:.1f} |"
        )
    lines += [
        "",
        f"- Baseline regime (whole network, batch {settings.baseline_batch}): {baseline_step_s * 1000:.0f} ms per step; "
        f"training it took {baseline_seconds:.0f} s (0 when re-used from the cache).",
        f"- The frozen backbone's forward on one search batch ({frames} crops): {backbone_s * 1000:.0f} ms, computed "
        f"once per batch of the pool instead of once per step and candidate.",
        f"- Test split: the baseline tracker's AO {tracked['ao']:.3f} (SR0.5 {tracked['sr50']:.3f}, SR0.75 "
        f"{tracked['sr75']:.3f}) against {static['ao']:.3f} (SR0.5 {static['sr50']:.3f}) for a tracker that stays at "
        f"the first box.",
    ]
    lines.append(
        "- evaluate_neck's seconds include computing the frozen backbone's maps of the search batches when a seed's "
        "are not cached yet (once per seed, then kept in memory and next to the baseline's checkpoint); the spread "
        "over seeds (neck initialisation and batches) is the proxy's noise, against which differences between necks "
        "are to be read."
    )
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_report:
        write_section(Path(args.report), "tracking", "Tracking proxy speed", text, "python scripts/benchmark_tracking.py")
        print(f"\nwritten to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
