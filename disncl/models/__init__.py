"""DisNCL networks: CLIP towers, MII/MEI heads, CLUB estimators, tokenizers and checkpoints."""

from .checkpoint import CheckpointError, build_model, load_model, load_weights, save_model
from .config import ModelConfig
from .disncl import DisNCLModel, Encoded
from .heads import GaussianPredictor, HeadOutput, ModalityHead, VariationalEncoder, reparameterize
from .tokenizer import load_tokenizer, tokenize, train_word_tokenizer

__all__ = [
    "CheckpointError",
    "DisNCLModel",
    "Encoded",
    "GaussianPredictor",
    "HeadOutput",
    "ModalityHead",
    "ModelConfig",
    "VariationalEncoder",
    "build_model",
    "load_model",
    "load_tokenizer",
    "load_weights",
    "reparameterize",
    "save_model",
    "tokenize",
    "train_word_tokenizer",
]
