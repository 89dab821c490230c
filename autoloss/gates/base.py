"""Temporary re-export while the cell package moves to autoloss.engine.protocols."""

from autoloss.engine.protocols import Gate, Verdict  # noqa: F401
