"""Schedules of a differentiable search: skip dropout, architecture warm-up, early stopping.

Epochs are counted from 0.

- ``skip_dropout_rate``: CHASE's operation-level dropout after skip connections starts at
  ``start`` (0.6) and decays linearly to 0 at the last epoch: ``start * (1 - epoch / (epochs - 1))``.
- ``arch_warmup``: architecture steps start after the warm-up (CHASE: from epoch 10, counting from 0,
  of 70, i.e. 1/7 of the schedule: ``warmup_epochs(70) == 10``).
- ``EarlyStopping``: after each epoch the hold-out loss of the supernet and of the derived discrete
  cell; the minimum of the *cell's* loss (what is kept is the cell, not the supernet) decides the best
  epoch and genotype (``criterion="supernet"`` uses the supernet's); the search stops once
  ``patience`` epochs passed without a new minimum. Only epochs from ``start`` (the warm-up's end)
  are eligible: during the warm-up alpha is still its initial noise, so the derived cell is an argmax
  of noise (CHASE derives and evaluates only after it). Patience counts from the first eligible epoch.
"""

from __future__ import annotations

import math

from autoloss.cell.genotype import Genotype, parse_genotype

CHASE_WARMUP_FRACTION = 10 / 70


def skip_dropout_rate(epoch: int, epochs: int, start: float = 0.6) -> float:
    """The skip-connection dropout rate at ``epoch`` of ``epochs``: linear from ``start`` to 0 at the last epoch."""
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    if not 0.0 <= start < 1.0:
        raise ValueError(f"a dropout rate must be in [0, 1), got {start}")
    if epochs == 1:
        return start
    fraction = min(max(epoch, 0), epochs - 1) / (epochs - 1)
    return start * (1.0 - fraction)


def warmup_epochs(epochs: int, fraction: float = CHASE_WARMUP_FRACTION) -> int:
    """Warm-up epochs scaled to a schedule of ``epochs`` (CHASE's 10 of 70 by default)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the warm-up fraction must be in [0, 1), got {fraction}")
    return int(math.floor(epochs * fraction + 0.5))


def arch_warmup(epoch: int, warmup_epochs: int) -> bool:
    """True while ``epoch`` is in the warm-up (weights only); architecture steps run from epoch ``warmup_epochs``."""
    return epoch < warmup_epochs


class EarlyStopping:
    """The epoch of the minimum hold-out loss, its genotype, and when to stop."""

    CRITERIA = ("cell", "supernet")

    def __init__(self, patience: int, criterion: str = "cell", min_delta: float = 0.0, start: int = 0):
        if patience < 1:
            raise ValueError("patience must be at least 1 epoch")
        if criterion not in self.CRITERIA:
            raise ValueError(f"criterion must be one of {self.CRITERIA}, not {criterion!r}")
        self.patience = patience
        self.criterion = criterion
        self.min_delta = min_delta
        self.start = int(start)  # the first eligible epoch (the warm-up's end)
        self.best_epoch: int | None = None
        self.best_loss = math.inf
        self.best_genotype: Genotype | None = None
        self.history: list[dict] = []
        self.stopped = False

    def update(self, epoch: int, supernet_loss: float, cell_loss: float, genotype: Genotype) -> bool:
        """Record one epoch; True when the search should stop (``patience`` epochs after the best).
        An epoch before ``start`` is recorded but neither becomes the best nor counts toward patience."""
        self.history.append({"epoch": int(epoch), "supernet_loss": float(supernet_loss),
                             "cell_loss": float(cell_loss), "genotype": str(genotype)})
        self._consider(self.history[-1])
        return self.stopped

    def _consider(self, entry: dict) -> None:
        epoch = entry["epoch"]
        if epoch < self.start:
            return
        loss = float(entry["cell_loss"] if self.criterion == "cell" else entry["supernet_loss"])
        if not math.isnan(loss) and loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.best_genotype = loss, int(epoch), parse_genotype(entry["genotype"])
        self.stopped = self.best_epoch is not None and epoch - self.best_epoch >= self.patience

    def state_dict(self) -> dict:
        """Plain data (loads with ``torch.load(weights_only=True)`` and JSON)."""
        return {"patience": self.patience, "criterion": self.criterion, "min_delta": self.min_delta,
                "best_epoch": self.best_epoch, "best_loss": self.best_loss,
                "best_genotype": None if self.best_genotype is None else str(self.best_genotype),
                "history": [dict(h) for h in self.history], "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        """The stored patience, criterion and epochs; the best epoch is decided again from the epochs
        with this object's ``start`` (a state saved before warm-up epochs were excluded may name one)."""
        self.patience, self.criterion = int(state["patience"]), state["criterion"]
        self.min_delta = float(state["min_delta"])
        self.history = [dict(h) for h in state["history"]]
        self.best_epoch, self.best_loss, self.best_genotype, self.stopped = None, math.inf, None, False
        for entry in self.history:
            self._consider(entry)
