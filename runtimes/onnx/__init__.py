"""ONNX runtime: `.onnx` graphs served by ONNX Runtime on CPU or CUDA."""
