"""Vanilla evolution, the paper's Table 5 baseline: validity only, every survivor to the proxy."""

from __future__ import annotations

from dataclasses import dataclass

from autoloss.strategies.evolution import EvolutionOptions, EvolutionStrategy


@dataclass
class VanillaOptions(EvolutionOptions):
    pass


class VanillaStrategy(EvolutionStrategy):
    name = "vanilla"
    Options = VanillaOptions
