"""Mutable state outside a model's parameters: its buffers and the random number generators.

An architecture step, a mean-shift sample or an eigenvalue estimate runs extra forward passes that
must not change the search: ``preserved_buffers`` puts BN running statistics back, ``RandomState``
captures and restores the generators (so two passes can see the same dropout masks, and a resumed
search draws the same numbers as an uninterrupted one).
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn


@contextmanager
def preserved_buffers(module: nn.Module) -> Iterator[None]:
    """Run the body, then put every buffer of ``module`` (BN running statistics, counters) back."""
    saved = [(buffer, buffer.detach().clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def cuda_devices(parameters) -> list[int]:
    """The CUDA device indices the given tensors live on (empty on a CPU-only model)."""
    return sorted({p.device.index or 0 for p in parameters if p.device.type == "cuda"})


@dataclass
class RandomState:
    """The torch CPU generator, the CUDA generators of ``devices``, and optionally Python's and numpy's."""

    cpu: torch.Tensor
    cuda: dict[int, torch.Tensor] = field(default_factory=dict)
    python: object = None
    numpy: object = None

    @classmethod
    def capture(cls, devices: list[int] = (), *, host: bool = False) -> "RandomState":
        """The current state; ``host=True`` also records Python's ``random`` and numpy's global generator."""
        python = numpy_state = None
        if host:
            python = random.getstate()
            numpy_state = _numpy_state()
        return cls(torch.get_rng_state(), {d: torch.cuda.get_rng_state(d) for d in devices}, python, numpy_state)

    def restore(self) -> None:
        """Make the generators draw again what they drew after ``capture``."""
        torch.set_rng_state(self.cpu)
        for device, state in self.cuda.items():
            torch.cuda.set_rng_state(state, device)
        if self.python is not None:
            random.setstate(self.python)
        if self.numpy is not None:
            _set_numpy_state(self.numpy)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Restore the captured state, then run the body (which consumes random numbers as it likes)."""
        self.restore()
        yield

    def to_plain(self) -> dict:
        """Plain containers and tensors only (loads with ``torch.load(weights_only=True)``)."""
        python = None
        if self.python is not None:
            version, internal, gauss = self.python
            python = [version, list(internal), gauss]
        return {"cpu": self.cpu, "cuda": {str(d): s for d, s in self.cuda.items()}, "python": python,
                "numpy": self.numpy}

    @classmethod
    def from_plain(cls, plain: dict) -> "RandomState":
        python = None
        if plain.get("python") is not None:
            version, internal, gauss = plain["python"]
            python = (version, tuple(internal), gauss)
        cuda = {int(d): s for d, s in plain.get("cuda", {}).items() if int(d) < _cuda_count()}
        return cls(plain["cpu"], cuda, python, plain.get("numpy"))


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _numpy_state():
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy ships with torch's usual installs
        return None
    name, keys, position, has_gauss, cached = numpy.random.get_state(legacy=True)
    return [name, [int(k) for k in keys], int(position), int(has_gauss), float(cached)]


def _set_numpy_state(state) -> None:
    import numpy

    name, keys, position, has_gauss, cached = state
    numpy.random.set_state((name, numpy.asarray(keys, dtype=numpy.uint32), position, has_gauss, cached))
