"""Replay of captured sessions against a staging cluster (engine and proxy arrive with their issues)."""
