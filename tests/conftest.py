"""Shared fixtures: the bundled search spaces (loaded once per session), one torch thread, a synthetic COCO set."""

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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a loaded machine.

    A module asks for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the thread count
    is put back when the module ends.
    """
    import torch  # here, not at the top: most test modules never import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    """A small synthetic COCO dataset (8 training and 4 validation images, seed 0), written once per session.

    Shared by every test that reads it: a test that damages a dataset copies it first.
    """
    from autoloss.detection.synthetic import make_synthetic_coco

    root = tmp_path_factory.mktemp("coco")
    make_synthetic_coco(root, num_train=8, num_val=4, seed=0)
    return root
