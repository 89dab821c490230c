"""The tracking cell: CHASE's DARTS-style cell as a representation of the engine."""
