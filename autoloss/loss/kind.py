"""What run readers need of the loss kind: how to show its genotypes, how to export its best."""

from __future__ import annotations


def describer(config: dict):
    """Prefix, infix and LaTeX forms of the genotypes of a run with this config."""
    from autoloss.report.formulas import Formulas

    return Formulas(config)


def export_run(run_dir, **options):
    from autoloss.export.exporter import export_run as export

    return export(run_dir, **options)
