"""Temporary: the loss gates moved to autoloss.loss.gates, Verdict to autoloss.engine.protocols."""
