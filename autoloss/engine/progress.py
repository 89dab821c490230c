"""Search progress: a live panel on a terminal (rich), plain log lines anywhere else.

Shows the generation, the gate funnel of the current generation, the best fitness so far against
the baseline, the evaluations run and an estimate of the time left; and, while workers train, what
each one is training (stage, candidate, iteration of total, loss, elapsed and estimated time), read
from their heartbeat files (:mod:`autoloss.engine.heartbeat`) at least every ``TRAINING_EVERY``
seconds in the plain log.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from autoloss.engine import heartbeat

TRAINING_EVERY = 30.0  # seconds between two "training" lines in the plain log


def fmt_number(value, missing: str = "-") -> str:
    """``value`` with four decimals; ``missing`` when it is not a finite number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.4f}"
    return missing


class Progress:
    def __init__(self, enabled: bool = True, live: bool | None = None, stream=None, metric: str = "fitness",
                 heartbeat_dir: str | Path | None = None, training_every: float = TRAINING_EVERY,
                 poll: float = 5.0):
        self.enabled, self.metric = enabled, metric
        self.poll = poll  # seconds between two looks at the heartbeats while results are awaited
        self.heartbeat_dir = None
        self.training_every, self._last_training = training_every, 0.0
        self.training: list[dict] = []
        if enabled and heartbeat_dir is not None:
            self.heartbeat_dir = Path(heartbeat_dir) / "heartbeat"
            self.heartbeat_dir.mkdir(parents=True, exist_ok=True)
            os.environ[heartbeat.ENV] = str(self.heartbeat_dir)  # inherited by the workers started later
        self.stream = stream or sys.stdout
        self.live_mode = enabled and (self.stream.isatty() if live is None else live)
        self.started = time.monotonic()
        self.generation_started = self.started
        self.durations: list[float] = []
        self.state = {"generation": None, "total": None, "funnel": [], "best": None, "baseline": None,
                      "evaluations": 0, "failures": 0}
        self._live = None
        if self.live_mode:
            from rich.live import Live

            self._live = Live(self._render(), refresh_per_second=4, transient=False)
            self._live.start()

    # -------------------------------------------------------------------- events

    def baseline_started(self, genotype: str, stages: list[str]):
        self._log(f"baseline: training the baseline ({' and '.join(stages)}): {genotype}")

    def note(self, text: str):
        self._log(text)

    def baseline(self, fitness, sample=None):
        """The baseline's ranking score; ``sample`` (an evidence.Sample) when it ran several seeds."""
        self.state["baseline"] = fitness
        if sample is not None and sample.n > 1:
            self.state["baseline_sd"] = sample.sd
            self._log(f"baseline {self.metric} {sample.text()}: the proxy's noise is about ± {sample.sd:.4f}; "
                      "differences smaller than that are not evidence")
        else:
            self._log(f"baseline {self.metric} {fmt_number(fitness)}")

    def generation(self, generation: int, total: int, size: int):
        self.generation_started = time.monotonic()
        self.state.update(generation=generation, total=total, funnel=[("bred", size, size)])
        self._log(f"generation {generation + 1}/{total}: {size} candidates")

    def gate(self, name: str, n_in: int, n_out: int, note: str = ""):
        self.state["funnel"].append((name, n_in, n_out))
        self._log(f"  {name:<12} {n_in:>6} in  {n_out:>6} passed" + (f"  ({note})" if note else ""))

    def tick(self):
        """Called while results are awaited: show what the workers are training."""
        if self.heartbeat_dir is None:
            return
        self.training = heartbeat.read_all(self.heartbeat_dir)
        if self._live is not None:
            self._refresh()
        elif self.training and time.monotonic() - self._last_training >= self.training_every:
            self._last_training = time.monotonic()
            for state in self.training:
                self._log("  training " + describe_training(state))

    def evaluated(self, stage: str, genotype: str, fitness, reason: str, ranks: bool = True):
        self.state["evaluations"] += 1
        if fitness is None:
            self.state["failures"] += 1
        elif ranks and (self.state["best"] is None or fitness > self.state["best"]):
            self.state["best"] = fitness
            noise = self.state.get("baseline_sd")
            self._log(f"  new best {self.metric} {fitness:.4f}"
                      + (f" (one seed; the proxy's noise is ± {noise:.4f})" if noise is not None else "") + f": {genotype}")
        self._refresh()

    def generation_done(self, summary: dict, best: list):
        self.durations.append(time.monotonic() - self.generation_started)
        if best:
            self.state["best"] = best[0].fitness
        self._log(f"  generation {summary['generation'] + 1} done: best this generation "
                  f"{fmt_number(summary.get('best_fitness'))}, best {self.metric} so far "
                  f"{fmt_number(self.state['best'])}{self._eta()}")

    def close(self):
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    # -------------------------------------------------------------------- output

    def _eta(self) -> str:
        total, generation = self.state["total"], self.state["generation"]
        if not self.durations or total is None or generation is None:
            return ""
        left = (total - generation - 1) * (sum(self.durations) / len(self.durations))
        return f", about {left:.0f} s left" if left > 0 else ""

    def _render(self):
        from rich.table import Table

        s = self.state
        title = (f"generation {s['generation'] + 1}/{s['total']}" if s["generation"] is not None else "starting")
        table = Table(title=f"autoloss search: {title}", show_header=True)
        for col in ("stage", "in", "passed"):
            table.add_column(col)
        for name, n_in, n_out in s["funnel"]:
            table.add_row(name, str(n_in), str(n_out))
        for state in self.training:
            table.add_row("training", describe_training(state), "")
        table.caption = (f"best {self.metric} {fmt_number(s['best'])} (baseline {fmt_number(s['baseline'])}"
                         f"{' ± ' + fmt_number(s['baseline_sd']) + ' sd' if s.get('baseline_sd') is not None else ''}), "
                         f"{s['evaluations']} evaluations, "
                         f"{s['failures']} failed, {time.monotonic() - self.started:.0f} s{self._eta()}")
        return table

    def _refresh(self):
        if self._live is not None:
            self._live.update(self._render())

    def _log(self, line: str):
        if not self.enabled:
            return
        if self._live is not None:
            self._refresh()
        else:
            print(f"[{time.monotonic() - self.started:7.1f}s] {line}", file=self.stream, flush=True)


def describe_training(state: dict) -> str:
    """``proxy Neg(...) iteration 120/300, loss 0.5321, 45 s elapsed, about 68 s left``."""
    genotype = str(state.get("genotype", "?"))
    genotype = genotype if len(genotype) <= 60 else genotype[:57] + "..."
    iteration, total, loss = state.get("iteration") or 0, state.get("total"), state.get("loss")
    elapsed = max(0.0, time.time() - state.get("started", time.time()))
    parts = [f"{state.get('stage', '?')} {genotype}", f"iteration {iteration}" + (f"/{total}" if total else "")]
    if loss is not None:
        parts[-1] += f", loss {loss:.4f}"
    parts.append(f"{elapsed:.0f} s elapsed")
    if total and iteration:
        parts.append(f"about {elapsed * (total - iteration) / iteration:.0f} s left")
    return ", ".join(parts)
