"""Eq. 6m: with split.agree a pair is trusted only as far as the mixtures of both of DisNCL's spaces trust it."""

from __future__ import annotations

import numpy as np

from disncl.config import load_config
from disncl.data.noise import NoisyPairs
from disncl.eval.encode import Embeddings
from disncl.train.loop import score_embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _embeddings(n: int, wrong_in_mii: np.ndarray, wrong_in_full: np.ndarray) -> Embeddings:
    """n images and n captions; pair k's caption lies on its image where the space calls it right, elsewhere not."""
    rng = np.random.default_rng(0)

    def space(wrong: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = _unit(rng.normal(size=(n, 16)))
        txt = img + 0.05 * rng.normal(size=(n, 16))
        txt[wrong] = rng.normal(size=(int(wrong.sum()), 16))
        return img, _unit(txt)

    img_mii, txt_mii = space(wrong_in_mii)
    img_full, txt_full = space(wrong_in_full)
    return Embeddings(img_full=img_full, img_mii=img_mii, txt_full=txt_full, txt_mii=txt_mii)


def test_agreement_keeps_the_lower_of_the_two_spaces_clean_probabilities() -> None:
    n = 200
    idx = np.arange(n)
    wrong_mii, wrong_full = idx < 60, (idx >= 40) & (idx < 100)
    emb = _embeddings(n, wrong_mii, wrong_full)
    pairs = NoisyPairs(caption=idx, image=idx, is_clean=~(wrong_mii | wrong_full))
    base = load_config(None, ["split.score=cosine"])
    agree = load_config(None, ["split.score=cosine", "split.agree=true"])
    _, own = score_embeddings(emb, pairs, base)
    _, both = score_embeddings(emb, pairs, agree)
    assert both.dtype == np.float32
    # The selection space (MII) alone trusts the pairs only the full space calls wrong; agreement does not.
    only_full_wrong = wrong_full & ~wrong_mii
    assert (own[only_full_wrong] > 0.9).all()
    assert (both[only_full_wrong] < 0.1).all()
    assert (both[~(wrong_mii | wrong_full)] > 0.9).all()
    assert np.all(both <= own + 1e-6)
    # A method with one space has nothing to agree with.
    ncr = load_config(None, ["train.method=ncr", "split.score=cosine", "split.agree=true"])
    _, ncr_own = score_embeddings(emb, pairs, load_config(None, ["train.method=ncr", "split.score=cosine"]))
    assert np.array_equal(score_embeddings(emb, pairs, ncr)[1], ncr_own)
