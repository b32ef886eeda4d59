"""Torch-free serving: load an exported bundle, embed images and captions with ONNX Runtime, search a
FAISS gallery, read pair scores.

:data:`REQUIRES` lists every third-party package these modules import (a test holds it to the code),
so a search service can run without PyTorch or transformers installed.
"""

from .bundle import Bundle, BundleError, Encodings
from .providers import choose_providers

# Import names of the third-party packages disncl.serve uses (scikit-learn: the detection metrics that
# pair scores report, through disncl.eval.detection).
REQUIRES = ("faiss", "numpy", "onnxruntime", "PIL", "pyarrow", "sklearn", "tokenizers", "tqdm")

__all__ = ["REQUIRES", "Bundle", "BundleError", "Encodings", "choose_providers"]
