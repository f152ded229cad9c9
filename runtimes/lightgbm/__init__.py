"""LightGBM runtime: serves a Booster (`.txt`, `.bst`) or a pickled LGBMModel."""
