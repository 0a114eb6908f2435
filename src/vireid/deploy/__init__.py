"""Using a trained run: embed images, index and search a gallery, export the model."""

from vireid.deploy.extractor import Extractor

__all__ = ["Extractor"]
