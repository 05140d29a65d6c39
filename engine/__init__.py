"""nanotui's headless engine: model, data, training, runs, GPUs, launching, reports.

Never imports textual, plotext or tui (tests/engine/test_import_rule.py enforces it).
"""
