"""MLflow runtime: serves an MLflow model directory (`MLmodel` + artifacts) via pyfunc."""
