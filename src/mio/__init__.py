"""MIO: a foundation model on multimodal tokens (arXiv 2409.17692)."""

__version__ = "0.1.0"
