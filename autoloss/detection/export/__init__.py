"""Exporting discovered losses as standalone MMDetection modules (``autoloss export``).

An exported module is one Python file that needs only torch and mmdet: each loss is a plain torch
function (generated from its tree: :mod:`~autoloss.detection.export.codegen`) inside an MMDetection
loss module registered under a readable class name (:mod:`~autoloss.detection.export.module`); beside
it, ``<module>_config.py`` is the config fragment that puts the losses into the searched detector
(:mod:`~autoloss.detection.export.snippet`). :func:`export_run` exports the best losses of a search
run (:mod:`~autoloss.detection.export.run`), :func:`export_expression` one expression;
:mod:`~autoloss.detection.export.zoo` regenerates the bundled :mod:`autoloss.zoo.cse_autoloss`.
Importing this package is cheap; the rest loads on use.
"""

__all__ = ["Export", "export_expression", "export_run"]


def __getattr__(name: str):
    if name in __all__:
        from autoloss.detection.export import exporter  # lazy: importing the package stays cheap

        return getattr(exporter, name)
    raise AttributeError(f"module 'autoloss.detection.export' has no attribute {name!r}")
