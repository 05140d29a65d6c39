"""Widgets of the nanotui app: run table, loss chart, GPU panel, samples and log views."""
