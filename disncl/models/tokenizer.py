"""Caption tokenisation: a word-level vocabulary for from-scratch towers, or a checkpoint's own."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
# Trainer order fixes the ids: [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3.
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def train_word_tokenizer(captions: Iterable[str], min_freq: int = 1) -> PreTrainedTokenizerFast:
    """Learn a word-level vocabulary from ``captions``.

    Text is NFD-normalised, lower-cased and stripped of accents, then split on whitespace with
    every punctuation character kept as its own token. Words seen fewer than ``min_freq``
    times map to ``[UNK]``. Every encoding is wrapped as ``[BOS] … [EOS]``; truncation makes
    room for both, so a truncated caption still ends with ``[EOS]``, where CLIP pools.
    """
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=min_freq)
    tok.train_from_iterator(captions, trainer=trainer)
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
        special_tokens=[(BOS, bos_id), (EOS, eos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )


def load_tokenizer(path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved with ``save_pretrained`` (ours or a CLIP checkpoint's), offline.

    A tokenizer without a pad token gets its EOS token as pad: CLIP pools at the *first* EOS,
    so trailing EOS padding never changes the pooled feature.
    """
    tok = AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenize(tokenizer: PreTrainedTokenizerBase, captions: list[str], max_len: int) -> dict[str, Tensor]:
    """Encode ``captions`` into padded ``input_ids``/``attention_mask`` of at most ``max_len`` tokens.

    Every row is guaranteed to contain the EOS id: if a tokenizer's post-processor does not
    add it, the last attended token is overwritten with EOS, since the text tower pools there.
    """
    enc = tokenizer(
        list(captions),
        padding=True,
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
    eos_id = tokenizer.eos_token_id
    if eos_id is not None:
        missing = ~(input_ids == eos_id).any(dim=1)
        if missing.any():
            input_ids = input_ids.clone()
            last = attention_mask.sum(dim=1).clamp(min=1) - 1
            rows = torch.nonzero(missing).squeeze(1)
            input_ids[rows, last[rows]] = eos_id
    return {"input_ids": input_ids, "attention_mask": attention_mask}
