"""Running a loss tree on the fixed probe batch: values and gradients (the validity gate's input)."""

from __future__ import annotations

from dataclasses import dataclass
from collections import OrderedDict

import numpy as np
import torch

from autoloss.loss.compile import compile_loss
from autoloss.loss.expression import Node
from autoloss.loss.samples import prediction_input, probe_batch
from autoloss.loss.space import SearchSpace

FINGERPRINT_DIGITS = 6  # significant digits kept; equal functions written differently agree far beyond
# The validity probe runs in the training dtype: a loss finite in float64 can overflow in float32
# (``Mul(Exp(X),Exp(X))`` at a logit of 50 is 2.7e43), and training would diverge on it.
PROBE_DTYPE = torch.float32


@dataclass(frozen=True)
class Probe:
    """The loss on the probe batch: per-element values and the gradients of their sum."""

    values: np.ndarray
    grads: dict[str, np.ndarray]


def run_probe(space: SearchSpace, node: Node, dtype: torch.dtype = PROBE_DTYPE) -> Probe:
    """Forward and backward on the probe batch (raises whatever the loss raises)."""
    batch = probe_batch(space, dtype)
    wrt = prediction_input(space)
    for name in wrt:
        batch[name].requires_grad_(True)
    values = compile_loss(node, space.output)(**batch)
    grads = torch.autograd.grad(values.sum(), [batch[n] for n in wrt], allow_unused=True)
    grads = {n: (g if g is not None else torch.zeros_like(batch[n])) for n, g in zip(wrt, grads)}
    return Probe(values.detach().numpy(), {n: g.numpy() for n, g in grads.items()})


def rounded_bytes(array: np.ndarray) -> bytes:
    """The array rounded to ``FINGERPRINT_DIGITS`` significant digits, as bytes to hash."""
    a = np.asarray(array, dtype=np.float64).ravel()
    a = np.where(np.abs(a) < 1e-12, 0.0, a)  # -0.0, 1e-17 and 0 are the same number here
    with np.errstate(all="ignore"):
        exponent = np.floor(np.log10(np.abs(a), where=a != 0, out=np.zeros_like(a)))
        scale = 10.0 ** (FINGERPRINT_DIGITS - 1 - exponent)
        mantissa = np.where(np.isfinite(a), np.round(a * scale), 0)
    return np.stack([mantissa, exponent, np.isnan(a), np.isposinf(a), np.isneginf(a)]).tobytes()


_CACHE: OrderedDict[tuple[str, str, str], Probe | Exception] = OrderedDict()
_CACHE_SIZE = 16384  # a whole generation of the paper's population; ~3 kB each


def probe(space: SearchSpace, node: Node) -> Probe | Exception:
    """The probe of a tree, or the exception it raised; cached, so validity and equivalence share one run."""
    key = (space.name, space.source, str(node))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    try:
        result: Probe | Exception = run_probe(space, node)
    except Exception as exc:  # a candidate that raises is a verdict, not a crash
        result = exc
    _CACHE[key] = result
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result
