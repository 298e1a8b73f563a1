"""cxrgan: class-imbalance fixes for chest X-ray classification, generative and classic, with honest statistics."""

from cxrgan.errors import CxrganError

__version__ = "0.1.0"
__all__ = ["CxrganError", "__version__"]
