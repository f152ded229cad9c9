"""scikit-learn runtime: `python -m modelport.runtimes.sklearn --model_dir ...`."""
