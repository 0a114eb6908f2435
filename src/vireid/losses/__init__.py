"""Losses as small functions with plain tensor contracts."""
