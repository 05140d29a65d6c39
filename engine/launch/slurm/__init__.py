"""The Slurm executor: submitit job arrays, their config and scheduler state."""
