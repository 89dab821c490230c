"""Noisy-label digits: a cheap but real proxy task for the classification-loss search.

A one-hidden-layer MLP learns scikit-learn's 8 x 8 digits from labels with symmetric noise, trained
with the candidate loss; the fitness is its clean test accuracy (stage ``proxy``), the MOS score its
clean validation accuracy after a short run on a small verify subset (stage ``mos``). Data, stages,
loss inputs, the measured defaults and determinism: docs/noisy_digits.md.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

from autoloss.engine import heartbeat
from autoloss.errors import UserError, reject_unknown_fields
from autoloss.loss.compile import compile_loss
from autoloss.loss.expression import parse
from autoloss.loss.space import SearchSpace, load_space

NUM_CLASSES = 10
TEST_FRACTION = 0.3
VAL_FRACTION = 0.15
VERIFY_PER_CLASS = 20
STAGES = ("proxy", "mos", "test")  # "test": retrain as the proxy, score on the held-out split
MODES = ("softmax", "sigmoid")
IOU_STAND_INS = ("one", "confidence")


class Diverged(RuntimeError):
    """Training with a candidate loss produced a NaN or infinite loss or parameter."""


@dataclass(frozen=True)
class DigitsData:
    """The fixed split of one (noise, data_seed): tensors, float32 features and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor  # noisy
    y_train_clean: torch.Tensor
    x_verify: torch.Tensor  # a subset of the training split
    y_verify: torch.Tensor  # noisy
    x_val: torch.Tensor
    y_val: torch.Tensor  # clean
    x_test: torch.Tensor
    y_test: torch.Tensor  # clean
    x_holdout: torch.Tensor  # clean; carved out of the test split, empty unless ``holdout`` > 0
    y_holdout: torch.Tensor


def symmetric_noise(labels: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Replace each label with probability ``noise`` by a uniformly drawn *different* class."""
    flip = rng.random(len(labels)) < noise
    offset = rng.integers(1, NUM_CLASSES, size=len(labels))  # 1..C-1: never the same class
    return np.where(flip, (labels + offset) % NUM_CLASSES, labels)


@lru_cache(maxsize=8)
def load_data(noise: float, data_seed: int, holdout: float = 0.0, verify_per_class: int = VERIFY_PER_CLASS) -> DigitsData:
    """The split and the noisy labels, built once per process for each setting.

    ``holdout`` > 0 carves that share of the test split (stratified, seeded by ``data_seed``) into
    a held-out split that no search stage sees; the training, validation and verify data and the
    noise do not change with it.
    """
    from sklearn.datasets import load_digits  # heavy: scikit-learn, needed only to build the split
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=data_seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=VAL_FRACTION, stratify=y_rest, random_state=data_seed + 1)
    rng = np.random.default_rng(data_seed)
    y_noisy = symmetric_noise(y_train, noise, rng)
    verify = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y_train == c))[:verify_per_class]
                                     for c in range(NUM_CLASSES)]))
    if holdout > 0:
        x_test, x_holdout, y_test, y_holdout = train_test_split(
            x_test, y_test, test_size=holdout, stratify=y_test, random_state=data_seed + 2)
    else:
        x_holdout, y_holdout = x_test[:0], y_test[:0]
    t = torch.from_numpy
    return DigitsData(t(x_train), t(y_noisy), t(y_train), t(x_train[verify]), t(y_noisy[verify]),
                      t(x_val), t(y_val), t(x_test), t(y_test), t(x_holdout), t(y_holdout))


@lru_cache(maxsize=16)
def _space(name: str) -> SearchSpace:
    return load_space(name)


@dataclass(frozen=True)
class NoisyDigitsTask:
    """Noisy-label digits classification; docs/noisy_digits.md has the measured defaults."""

    space: str = "cls_softmax"  # bundled space name or YAML path; a softmax or sigmoid space
    noise: float = 0.4  # symmetric label-noise rate of the training split
    steps: int = 1000  # proxy training steps
    mos_steps: int = 80  # model-optimisation-simulation (cheap gate) steps
    batch_size: int = 128
    hidden: int = 128
    lr: float = 0.005  # Adam
    data_seed: int = 0  # split + noise
    iou: str = "one"  # the IoU stand-in W: "one" (a perfect box) or "confidence" (detached p of the label)
    holdout: float = 0.0  # share of the test split kept out of every search stage (the "test" stage scores it)
    mos_lr: float | None = None  # Adam learning rate of the MOS (None: ``lr``)
    verify_per_class: int = VERIFY_PER_CLASS  # training images per class in the MOS's verify subset

    def __post_init__(self):
        if not 0.0 <= self.noise < 1.0:
            raise UserError(f"noisy digits: noise must be in [0, 1), got {self.noise}")
        for name in ("steps", "mos_steps", "batch_size", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"noisy digits: {name} must be a positive integer, got {value!r}")
        if self.iou not in IOU_STAND_INS:
            raise UserError(f"noisy digits: iou must be one of {', '.join(IOU_STAND_INS)}, got {self.iou!r}")
        if not self.lr > 0:
            raise UserError(f"noisy digits: lr must be positive, got {self.lr}")
        if self.mos_lr is not None and not self.mos_lr > 0:
            raise UserError(f"noisy digits: mos_lr must be positive, got {self.mos_lr}")
        if not 0.0 <= self.holdout <= 0.8:
            raise UserError(f"noisy digits: holdout must be in [0, 0.8], got {self.holdout}")
        value = self.verify_per_class
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 50:
            raise UserError(f"noisy digits: verify_per_class must be an integer in 1..50, got {value!r}")
        space = self.load_space()
        if space.mode not in MODES:
            raise UserError(f"noisy digits: space '{space.name}' is a {space.mode} space; "
                            f"a classification space ({', '.join(MODES)}) is needed")

    def load_space(self) -> SearchSpace:
        return _space(str(self.space))

    def to_dict(self) -> dict:
        """The settings as plain data; the later options are left out at their defaults, so the
        stored task of a run started before they existed still matches on resume."""
        d = asdict(self)
        for name, default in _LATER_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NoisyDigitsTask":
        reject_unknown_fields(cls, d, "noisy digits")
        return cls(**d)

    def evaluate(self, expression: str, stage: str = "proxy", seed: int = 0) -> dict:
        """Train with the loss ``expression`` and score the model.

        Returns ``{"fitness", "stage", "steps", "final_loss", "behaviour", "seconds"}`` (``behaviour``: a
        digest of the model's predicted classes on the scored split, equal for losses that train the
        same model (a near-clone); see :data:`autoloss.engine.study.BEHAVIOUR`); raises :class:`Diverged`
        when the loss or a parameter becomes NaN or infinite, ExpressionError for a malformed
        expression, and whatever torch raises for a loss of the wrong shape.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage '{stage}': expected one of {', '.join(STAGES)}")
        space = self.load_space()
        loss_fn = compile_loss(parse(expression, space), space.output)
        if stage == "test" and not self.holdout > 0:
            raise ValueError("the 'test' stage scores the held-out split: set holdout > 0")
        data = load_data(float(self.noise), int(self.data_seed), float(self.holdout), int(self.verify_per_class))
        lr = self.lr
        if stage == "proxy":
            split = (data.x_train, data.y_train, data.x_test, data.y_test, self.steps)
        elif stage == "test":
            split = (data.x_train, data.y_train, data.x_holdout, data.y_holdout, self.steps)
        else:
            split = (data.x_verify, data.y_verify, data.x_val, data.y_val, self.mos_steps)
            lr = self.mos_lr or self.lr
        threads = torch.get_num_threads()
        start = time.perf_counter()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
                torch.manual_seed(int(seed))  # one start for all: equal functions score equally
                final_loss, fitness, behaviour = self._train(space, loss_fn, int(seed), lr, *split)
        finally:
            torch.set_num_threads(threads)
        return {"fitness": fitness, "stage": stage, "steps": split[-1], "final_loss": final_loss,
                "behaviour": behaviour, "seconds": time.perf_counter() - start}

    def _iou(self, logits: torch.Tensor, target: torch.Tensor, sigmoid: bool) -> torch.Tensor:
        """W: 1 for every sample, or the model's detached probability of the (noisy) label."""
        if self.iou == "one":
            return target if sigmoid else torch.ones(len(logits), 1, dtype=logits.dtype)
        with torch.no_grad():
            if sigmoid:
                return target * torch.sigmoid(logits)
            return (torch.softmax(logits, dim=1) * target).sum(dim=1, keepdim=True)

    def _train(self, space, loss_fn, seed, lr, x, y, x_eval, y_eval, steps) -> tuple[float, float, str]:
        model = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], self.hidden, dtype=torch.float32), torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, NUM_CLASSES, dtype=torch.float32))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        logits_name, target_name, iou_name = (space.input_for(r).name for r in ("logits", "target", "iou"))
        sigmoid = space.mode == "sigmoid"
        generator = torch.Generator().manual_seed(seed)
        n, batch = len(x), min(self.batch_size, len(x))
        loss_value = float("nan")
        for step in range(steps):
            index = torch.randint(n, (batch,), generator=generator)
            logits = model(x[index])
            target = torch.nn.functional.one_hot(y[index], NUM_CLASSES).to(logits.dtype)
            iou = self._iou(logits, target, sigmoid)
            out = loss_fn(**{logits_name: logits, target_name: target, iou_name: iou})
            loss = out.sum(dim=-1).mean()
            loss_value = loss.item()
            heartbeat.beat(step + 1, steps, loss_value)
            if not np.isfinite(loss_value):
                raise Diverged(f"loss became {loss_value} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise Diverged(f"parameters became non-finite at step {steps - 1}")
        with torch.no_grad():
            predicted = model(x_eval).argmax(dim=1)
        accuracy = (predicted == y_eval).float().mean().item()
        behaviour = hashlib.sha256(predicted.to(torch.uint8).numpy().tobytes()).hexdigest()[:16]
        return loss_value, accuracy, behaviour


_LATER_DEFAULTS = {"holdout": 0.0, "mos_lr": None, "verify_per_class": VERIFY_PER_CLASS}


def evaluate(task: dict, expression: str, stage: str, seed: int) -> dict:
    """Picklable entry point for worker processes: ``NoisyDigitsTask.from_dict(task).evaluate(...)``."""
    return NoisyDigitsTask.from_dict(task).evaluate(expression, stage, seed)
