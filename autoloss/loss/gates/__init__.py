"""Gates: progressively more expensive filters, each returning a verdict with a reason."""

from autoloss.engine.protocols import Gate, Verdict

__all__ = ["Gate", "Verdict"]
