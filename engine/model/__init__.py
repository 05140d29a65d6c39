"""The model: GPT, its CPU kernels, device and dtype choice, checkpoints, arithmetic."""
