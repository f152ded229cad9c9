"""Model-agnostic KernelSHAP explainer component in front of a remote predictor."""
