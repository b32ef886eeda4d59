"""Torch-free serving: load an exported bundle and embed images and captions with ONNX Runtime.

Only numpy, pillow, onnxruntime, tokenizers and tqdm are imported here, so a search service can run
without PyTorch or transformers installed.
"""

from .bundle import Bundle, BundleError, Encodings
from .providers import choose_providers

__all__ = ["Bundle", "BundleError", "Encodings", "choose_providers"]
