"""Search strategies: what to evaluate next (the engine runs it). :mod:`autoloss.plugins` registers them by name."""
