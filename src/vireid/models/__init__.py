"""Backbones, shared layers and method models."""
