"""Shared fixtures: the bundled search spaces, loaded once per session."""

from __future__ import annotations

import pytest

from autoloss.loss.space import load_space

SPACE_NAMES = ("cls_softmax", "cls_sigmoid", "reg")


@pytest.fixture(scope="session")
def spaces():
    """The three bundled spaces by name."""
    return {name: load_space(name) for name in SPACE_NAMES}


@pytest.fixture(scope="session")
def softmax(spaces):
    return spaces["cls_softmax"]


@pytest.fixture(scope="session")
def sigmoid(spaces):
    return spaces["cls_sigmoid"]


@pytest.fixture(scope="session")
def reg(spaces):
    return spaces["reg"]
