"""Write a standalone ``tokenizer.json`` that reproduces :func:`disncl.models.tokenizer.tokenize`.

``tokenize`` calls the transformers fast tokenizer with ``padding=True, truncation=True,
max_length=max_text_len``; transformers turns those into the backend's truncation and padding
settings at call time. Here they are stored in the file itself, so ``tokenizers.Tokenizer.from_file``
alone gives the same ids. The one step a tokenizer file cannot express (writing EOS into a row
that lacks it) is mirrored by :func:`disncl.serve.preprocess.tokenize_texts`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from disncl.models.tokenizer import tokenize
from disncl.serve.preprocess import tokenize_texts

TOKENIZER_FILE = "tokenizer.json"


def serving_tokenizer(tokenizer: PreTrainedTokenizerBase, max_text_len: int) -> Tokenizer:
    """A copy of ``tokenizer``'s backend with the training truncation and padding built in."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer, so it cannot be "
            "exported to tokenizer.json"
        )
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; load it with disncl.models.tokenizer.load_tokenizer")
    # A copy: the live backend's settings are rewritten by transformers on every call.
    copy = Tokenizer.from_str(backend.to_str())
    copy.enable_truncation(max_length=max_text_len, direction=tokenizer.truncation_side)
    copy.enable_padding(
        direction=tokenizer.padding_side, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token
    )
    return copy


def write_tokenizer(tokenizer: PreTrainedTokenizerBase, max_text_len: int, out_dir: Path) -> Tokenizer:
    """Save :func:`serving_tokenizer` as ``out_dir/tokenizer.json``; returns it."""
    serving = serving_tokenizer(tokenizer, max_text_len)
    serving.save(os.fspath(out_dir / TOKENIZER_FILE))
    return serving


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    """Ids of the pad, BOS, EOS and unknown tokens (``None`` where the tokenizer has none)."""
    return {
        "pad": tokenizer.pad_token_id,
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
    }


def check_token_parity(
    tokenizer: PreTrainedTokenizerBase, serving: Tokenizer, captions: list[str], max_text_len: int
) -> dict[str, Any]:
    """Compare serving ids and masks with ``tokenize`` on ``captions``; raise ``ValueError`` on any difference."""
    reference = tokenize(tokenizer, captions, max_text_len)
    ids, mask = tokenize_texts(serving, captions, tokenizer.eos_token_id)
    ref_ids = reference["input_ids"].numpy()
    ref_mask = reference["attention_mask"].numpy()
    if ids.shape != ref_ids.shape or not (np.array_equal(ids, ref_ids) and np.array_equal(mask, ref_mask)):
        row = _first_differing_row(ids, ref_ids, mask, ref_mask)
        raise ValueError(
            f"tokenizer.json does not reproduce training tokenisation (shapes {ids.shape} vs {ref_ids.shape}); "
            f"first differing caption {captions[row]!r}: serving ids {ids[row].tolist()}, "
            f"training ids {ref_ids[row].tolist()}"
        )
    return {"captions": len(captions), "identical": True, "max_tokens": int(mask.sum(axis=1).max())}


def _first_differing_row(ids: np.ndarray, ref_ids: np.ndarray, mask: np.ndarray, ref_mask: np.ndarray) -> int:
    for row in range(min(len(ids), len(ref_ids))):
        a, b = ids[row][mask[row] == 1], ref_ids[row][ref_mask[row] == 1]
        if not np.array_equal(a, b):
            return row
    return 0
