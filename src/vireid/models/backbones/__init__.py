"""Backbones with torchvision-compatible parameter names (torchvision itself is not used)."""

from .resnet import ResNet, load_pretrained, resnet18, resnet34, resnet50

__all__ = ["ResNet", "load_pretrained", "resnet18", "resnet34", "resnet50"]
