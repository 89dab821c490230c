"""The representation kinds this autoloss reads runs of, registered for the run readers."""

from autoloss.engine.registry import register_kind


def _loss():
    from autoloss.loss import kind

    return kind


def _cell():
    from autoloss.cell import kind

    return kind


register_kind("loss", _loss)
register_kind("cell", _cell)
