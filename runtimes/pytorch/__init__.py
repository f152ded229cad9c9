"""PyTorch runtime: TorchScript and torch.export programs on CPU or CUDA."""
