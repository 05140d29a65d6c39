"""Screens of the nanotui app."""
