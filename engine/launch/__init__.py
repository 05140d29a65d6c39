"""Launching: queue, dispatcher, executors, GPUs, placement, estimates."""
