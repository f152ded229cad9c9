"""XGBoost runtime: serves a Booster (`.json`, `.ubj`, `.bst`) or a pickled XGBModel."""
