"""Noisy-label digits: a cheap but real proxy task for the loss search (DOCSTRING TBD)."""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
import torch

from autoloss.loss.compile import compile_loss
from autoloss.loss.expression import parse
from autoloss.loss.space import SearchSpace, load_space

NUM_CLASSES = 10
TEST_FRACTION = 0.3
VAL_FRACTION = 0.15
VERIFY_PER_CLASS = 20
STAGES = ("proxy", "mos")


class Diverged(RuntimeError):
    """Training with a candidate loss produced a NaN or infinite loss or parameter."""


@dataclass(frozen=True)
class _Data:
    x_train: torch.Tensor
    y_train: torch.Tensor  # noisy
    y_train_clean: torch.Tensor
    x_verify: torch.Tensor
    y_verify: torch.Tensor  # noisy
    x_val: torch.Tensor
    y_val: torch.Tensor  # clean
    x_test: torch.Tensor
    y_test: torch.Tensor  # clean


def _symmetric_noise(labels: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Replace each label with probability ``noise`` by a uniformly drawn *different* class."""
    flip = rng.random(len(labels)) < noise
    offset = rng.integers(1, NUM_CLASSES, size=len(labels))
    return np.where(flip, (labels + offset) % NUM_CLASSES, labels)


@lru_cache(maxsize=8)
def load_data(noise: float, data_seed: int) -> _Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y,
                                                      random_state=data_seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=VAL_FRACTION, stratify=y_rest,
                                                      random_state=data_seed + 1)
    rng = np.random.default_rng(data_seed)
    y_noisy = _symmetric_noise(y_train, noise, rng)
    verify = np.concatenate([rng.permutation(np.flatnonzero(y_train == c))[:VERIFY_PER_CLASS]
                             for c in range(NUM_CLASSES)])
    verify.sort()
    t = torch.from_numpy
    return _Data(t(x_train), t(y_noisy), t(y_train), t(x_train[verify]), t(y_noisy[verify]),
                 t(x_val), t(y_val), t(x_test), t(y_test))


@dataclass(frozen=True)
class NoisyDigitsTask:
    space: str = "cls_softmax"
    noise: float = 0.4
    steps: int = 400
    mos_steps: int = 80
    batch_size: int = 128
    hidden: int = 64
    lr: float = 0.01
    data_seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NoisyDigitsTask":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown NoisyDigitsTask field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def load_space(self) -> SearchSpace:
        return _space(self.space)

    def evaluate(self, expression: str, stage: str = "proxy", seed: int = 0) -> dict:
        if stage not in STAGES:
            raise ValueError(f"unknown stage '{stage}': expected one of {', '.join(STAGES)}")
        space = self.load_space()
        loss_fn = compile_loss(parse(expression, space), space.output)
        data = load_data(float(self.noise), int(self.data_seed))
        if stage == "proxy":
            x, y, x_eval, y_eval, steps = data.x_train, data.y_train, data.x_test, data.y_test, self.steps
        else:
            x, y, x_eval, y_eval, steps = data.x_verify, data.y_verify, data.x_val, data.y_val, self.mos_steps
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        start = time.perf_counter()
        try:
            final_loss, fitness = self._train(space, loss_fn, expression, seed, x, y, x_eval, y_eval, steps)
        finally:
            torch.set_num_threads(threads)
        return {"fitness": fitness, "stage": stage, "steps": steps, "final_loss": final_loss,
                "seconds": time.perf_counter() - start}

    def _train(self, space, loss_fn, expression, seed, x, y, x_eval, y_eval, steps):
        torch.manual_seed(seed + zlib.crc32(expression.encode()))
        gen = torch.Generator().manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], self.hidden), torch.nn.ReLU(),
                                    torch.nn.Linear(self.hidden, NUM_CLASSES))
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        names = {role: space.input_for(role).name for role in ("logits", "target", "iou")}
        sigmoid = space.mode == "sigmoid"
        n = len(x)
        bs = min(self.batch_size, n)
        loss_value = float("nan")
        for k in range(steps):
            idx = torch.randint(n, (bs,), generator=gen)
            logits = model(x[idx])
            target = torch.nn.functional.one_hot(y[idx], NUM_CLASSES).to(logits.dtype)
            iou = target if sigmoid else torch.ones(bs, 1, dtype=logits.dtype)
            out = loss_fn(**{names["logits"]: logits, names["target"]: target, names["iou"]: iou})
            loss = out.sum(dim=-1).mean()
            if not torch.isfinite(loss):
                raise Diverged(f"loss became {loss.item()} at step {k}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value = loss.item()
        for p in model.parameters():
            if not torch.isfinite(p).all():
                raise Diverged(f"parameters became non-finite by step {steps}")
        with torch.no_grad():
            acc = (model(x_eval).argmax(dim=1) == y_eval).float().mean().item()
        return loss_value, acc


@lru_cache(maxsize=16)
def _space(name: str) -> SearchSpace:
    return load_space(name)


def evaluate(task: dict, expression: str, stage: str, seed: int) -> dict:
    return NoisyDigitsTask.from_dict(task).evaluate(expression, stage, seed)
