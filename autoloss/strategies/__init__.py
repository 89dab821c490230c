"""Search strategies, registered by name: what to evaluate next (the engine runs it)."""

from autoloss.engine.registry import register_strategy
from autoloss.strategies.cse import CseStrategy
from autoloss.strategies.darts import STRATEGIES as DIFFERENTIABLE
from autoloss.strategies.random_search import RandomStrategy
from autoloss.strategies.vanilla import VanillaStrategy

for _strategy in (CseStrategy, VanillaStrategy, RandomStrategy, *DIFFERENTIABLE):
    register_strategy(_strategy)
