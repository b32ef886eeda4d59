"""Export a trained DisNCL model to a torch-free serving bundle (ONNX graphs + tokenizer + manifest).

``python -m disncl export --run RUN_DIR --out BUNDLE_DIR``; load the result with
:class:`disncl.serve.Bundle`.
"""

from .build import DEFAULT_TOLERANCE, export_bundle
from .onnx import DEFAULT_OPSET
from .parity import ParityError, ParityInputs

__all__ = ["DEFAULT_OPSET", "DEFAULT_TOLERANCE", "ParityError", "ParityInputs", "export_bundle"]
