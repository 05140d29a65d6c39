"""Training: `python -m engine.train RUN_DIR`, the Trainer, bench."""
