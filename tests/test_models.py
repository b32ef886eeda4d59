"""Tests for disncl.models: tokenizer, towers, heads, the DisNCL network and checkpoints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model_config
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from disncl.models.checkpoint import CheckpointError, build_model, load_model, load_weights, save_model
from disncl.models.config import ModelConfig
from disncl.models.disncl import DisNCLModel
from disncl.models.heads import GaussianPredictor, ModalityHead, VariationalEncoder, reparameterize
from disncl.models.tokenizer import load_tokenizer, tokenize, train_word_tokenizer
from disncl.models.towers import (
    build_clip,
    clip_config_dict,
    clip_from_config_dict,
    set_text_eos_id,
    text_features,
)

CAPTIONS = [
    "A dog runs on the grass.",
    "Two children play football in a park!",
    "A café with red chairs, seen from the street",
    "a man rides a bike down the hill",
    "The cat sleeps on a sofa; the dog watches.",
]


def tiny_model(**overrides: object) -> tuple[DisNCLModel, PreTrainedTokenizerFast]:
    torch.manual_seed(0)
    return build_model(tiny_model_config(**overrides), CAPTIONS)


def batch(model: DisNCLModel, tok: PreTrainedTokenizerFast) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 40, 40, 3), dtype=np.uint8)
    return model.preprocess(images), tokenize(tok, CAPTIONS[:3], model.cfg.max_text_len)


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_special_ids_and_normalisation() -> None:
    tok = train_word_tokenizer(CAPTIONS)
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    ids = tok("CAFÉ dog.")["input_ids"]
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids, skip_special_tokens=True) == "cafe dog ."
    unknown = tok("zebra dog")["input_ids"]
    assert unknown[1] == tok.unk_token_id and unknown[2] == tok.convert_tokens_to_ids("dog")


def test_min_freq_sends_rare_words_to_unk() -> None:
    tok = train_word_tokenizer(CAPTIONS, min_freq=2)
    assert tok("dog football")["input_ids"][1:3] == [tok.convert_tokens_to_ids("dog"), tok.unk_token_id]


def test_tokenize_pads_and_truncation_keeps_eos_last() -> None:
    tok = train_word_tokenizer(CAPTIONS)
    enc = tokenize(tok, ["a dog", CAPTIONS[1]], max_len=5)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == mask.shape == (2, 5)
    assert ids[0].tolist() == [1, tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("dog"), 2, 0]
    assert mask[0].tolist() == [1, 1, 1, 1, 0]
    assert ids[1, 0] == 1 and ids[1, -1] == 2 and mask[1].all()


def test_tokenize_adds_eos_when_tokenizer_does_not() -> None:
    vocab = {"[PAD]": 0, "[EOS]": 1, "[UNK]": 2, "a": 3, "dog": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]"
    )
    ids = tokenize(tok, ["a dog a dog", "dog"], max_len=3)["input_ids"]
    assert ids.tolist() == [[3, 4, 1], [1, 0, 0]]


def test_tokenizer_save_load_round_trip(tmp_path: Path) -> None:
    tok = train_word_tokenizer(CAPTIONS)
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    texts = CAPTIONS + ["unseen words here", "Ünïcödé DOG"]
    assert torch.equal(tokenize(tok, texts, 9)["input_ids"], tokenize(loaded, texts, 9)["input_ids"])


# --- heads -----------------------------------------------------------------------------------


def test_heads_shapes_and_logvar_clamp() -> None:
    head = ModalityHead(embed_dim=16, mii_dim=8, mei_dim=4, hidden=32)
    out = head(torch.randn(5, 16) * 1e3)
    assert out.mu_z.shape == out.logvar_z.shape == (5, 8)
    assert out.mu_u.shape == out.logvar_u.shape == (5, 4)
    assert out.logvar_z.min() >= -10 and out.logvar_z.max() <= 5
    assert head.decode(out.mu_z, out.mu_u).shape == (5, 16)
    assert [t.shape for t in GaussianPredictor(4, 8, 32)(torch.randn(2, 4))] == [(2, 8), (2, 8)]
    assert [t.shape for t in VariationalEncoder(16, 32, 8)(torch.randn(2, 16))] == [(2, 8), (2, 8)]


def test_reparameterize_uses_the_variance() -> None:
    mu = torch.zeros(20000, 1)
    sample = reparameterize(mu, torch.full_like(mu, np.log(4.0)))
    assert abs(sample.std().item() - 2.0) < 0.1
    assert torch.equal(reparameterize(mu, torch.full_like(mu, -1e4)), mu)


# --- model -----------------------------------------------------------------------------------


def test_forward_shapes_and_unit_norm() -> None:
    model, tok = tiny_model()
    pixels, text = batch(model, tok)
    assert pixels.shape == (3, 3, 32, 32)
    for enc in (model.encode_image(pixels), model.encode_text(**text)):
        assert enc.h.shape == (3, 16)
        assert enc.mu_z.shape == enc.logvar_z.shape == (3, 8)
        assert enc.mu_u.shape == enc.logvar_u.shape == (3, 8)
        torch.testing.assert_close(enc.h.norm(dim=-1), torch.ones(3))
        torch.testing.assert_close(enc.mii().norm(dim=-1), torch.ones(3))
        assert model.decode_image(enc.mu_z, enc.mu_u).shape == (3, 16)
        assert model.decode_text(enc.mu_z, enc.mu_u).shape == (3, 16)
    assert set(model.club) == {"uv_zt", "ut_zv", "zv_uv", "zt_ut"}
    mu, _ = model.club["uv_zt"](torch.randn(3, 8))
    assert mu.shape == (3, 8)


def test_gradients_reach_both_towers() -> None:
    model, tok = tiny_model()
    pixels, text = batch(model, tok)
    loss = model.encode_image(pixels).mu_z.sum() + model.encode_text(**text).mu_z.square().sum()
    loss.backward()
    for name in (
        "vision_model.embeddings.patch_embedding.weight",
        "text_model.embeddings.token_embedding.weight",
        "visual_projection.weight",
        "text_projection.weight",
    ):
        grad = model.clip.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_preprocess_resizes_and_normalises() -> None:
    model, _ = tiny_model(image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))
    white = torch.full((2, 48, 64, 3), 255, dtype=torch.uint8)
    out = model.preprocess(white)
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(out, 2.0))
    with pytest.raises(ValueError, match="uint8"):
        model.preprocess(np.zeros((1, 32, 32, 3), dtype=np.float32))


def test_text_pooling_is_at_eos_not_at_largest_id() -> None:
    model, tok = tiny_model()
    clip = model.clip
    enc = tokenize(tok, ["a dog", "the cat sleeps on a sofa"], model.cfg.max_text_len)
    hidden = clip.text_model(**enc).last_hidden_state
    eos_pos = (enc["input_ids"] == tok.eos_token_id).int().argmax(dim=1)
    expected = clip.text_projection(hidden[torch.arange(2), eos_pos])
    torch.testing.assert_close(text_features(clip, **enc), expected)
    # HF's own pooling falls back to argmax(input_ids) when eos_token_id == 2 - why we pool ourselves.
    assert not torch.allclose(clip.get_text_features(**enc).pooler_output, expected)


def test_padding_does_not_change_text_features() -> None:
    model, tok = tiny_model()
    model.eval()
    alone = model.encode_text(**tokenize(tok, ["a dog"], 12)).h
    padded = model.encode_text(**tokenize(tok, ["a dog", CAPTIONS[1]], 12)).h[:1]
    torch.testing.assert_close(alone, padded)


# --- checkpoints -----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    model, tok = tiny_model()
    model.eval()
    pixels, text = batch(model, tok)
    save_model(model, tok, tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["model_config"]["vocab_size"] == len(tok)
    loaded, loaded_tok = load_model(tmp_path / "ckpt")
    assert loaded.cfg == model.cfg and not loaded.training
    assert torch.equal(
        tokenize(loaded_tok, CAPTIONS, 12)["input_ids"], tokenize(tok, CAPTIONS, 12)["input_ids"]
    )
    with torch.no_grad():
        for a, b in ((model.encode_image(pixels), loaded.encode_image(pixels)),
                     (model.encode_text(**text), loaded.encode_text(**text))):
            for field in dataclasses.fields(a):
                assert torch.equal(getattr(a, field.name), getattr(b, field.name)), field.name
    sd, lsd = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(sd[k], lsd[k]) for k in sd)


def test_loading_into_another_config_names_the_mismatch(tmp_path: Path) -> None:
    model, tok = tiny_model()
    save_model(model, tok, tmp_path / "a")
    other, other_tok = tiny_model(mii_dim=12)
    expected = r"model\.safetensors: .*12 shape differences: image_head\.mii\.net\.3\.weight \(16, 32\)"
    with pytest.raises(CheckpointError, match=expected):
        load_weights(other, tmp_path / "a" / "model.safetensors")
    # A model.json that does not describe the weights next to it is caught the same way.
    save_model(other, other_tok, tmp_path / "b")
    (tmp_path / "a" / "model.json").replace(tmp_path / "b" / "model.json")
    with pytest.raises(CheckpointError, match="mii"):
        load_model(tmp_path / "b")


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    model, tok = tiny_model()
    save_model(model, tok, tmp_path)
    deeper, _ = tiny_model(vision_layers=2)
    with pytest.raises(CheckpointError, match=r"missing keys: clip\.vision_model\.encoder\.layers\.1\."):
        load_weights(deeper, tmp_path / "model.safetensors")


def test_truncated_weights_raise_checkpoint_error(tmp_path: Path) -> None:
    model, tok = tiny_model()
    save_model(model, tok, tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    model, tok = tiny_model()
    save_model(model, tok, tmp_path)
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="upgrade disncl"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nowhere")


def test_clip_config_dict_round_trip_through_json() -> None:
    model, _ = tiny_model()
    clip = clip_from_config_dict(json.loads(json.dumps(clip_config_dict(model.clip))), model.cfg)
    assert {k: v.shape for k, v in clip.state_dict().items()} == {
        k: v.shape for k, v in model.clip.state_dict().items()
    }
    assert clip.config.text_config.eos_token_id == 2


# --- pretrained backbone ---------------------------------------------------------------------


def make_backbone(path: Path, with_preprocessor: bool) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """A tiny CLIP checkpoint laid out like a downloaded one."""
    torch.manual_seed(1)
    tok = train_word_tokenizer(CAPTIONS)
    clip = build_clip(tiny_model_config(image_size=24, patch_size=6, embed_dim=20, max_text_len=16), tok)
    # A stale EOS id in the config (as in OpenAI's checkpoints) must be replaced by the tokenizer's.
    set_text_eos_id(clip, 7)
    clip.save_pretrained(path)
    set_text_eos_id(clip, tok.eos_token_id)
    tok.save_pretrained(path)
    if with_preprocessor:
        stats = {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6], "crop_size": {"height": 24}}
        (path / "preprocessor_config.json").write_text(json.dumps(stats))
    return clip.eval(), tok


def test_pretrained_backbone_matches_original_features(tmp_path: Path) -> None:
    original, orig_tok = make_backbone(tmp_path / "backbone", with_preprocessor=True)
    cfg = ModelConfig(backbone=str(tmp_path / "backbone"), max_text_len=12)
    model, tok = build_model(cfg, None)
    model.eval()
    assert model.cfg is cfg
    assert (cfg.image_size, cfg.patch_size, cfg.embed_dim, cfg.vocab_size) == (24, 6, 20, len(orig_tok))
    assert (cfg.image_mean, cfg.image_std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert model.clip.config.text_config.eos_token_id == tok.eos_token_id == 2

    images = np.random.default_rng(0).integers(0, 256, size=(2, 24, 24, 3), dtype=np.uint8)
    pixels = model.preprocess(images)
    scaled = torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0
    mean, std = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1), torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1)
    manual = (scaled - mean) / std
    torch.testing.assert_close(pixels, manual)
    with torch.no_grad():
        expected = F.normalize(original.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        torch.testing.assert_close(model.encode_image(pixels).h, expected)
        text = tokenize(tok, CAPTIONS, cfg.max_text_len)
        expected_text = F.normalize(text_features(original, **text), dim=-1)
        torch.testing.assert_close(model.encode_text(**text).h, expected_text)

    # The saved model rebuilds without the backbone directory.
    save_model(model, tok, tmp_path / "saved")
    for f in (tmp_path / "backbone").iterdir():
        f.unlink()
    loaded, _ = load_model(tmp_path / "saved")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(pixels).h, expected)


def test_pretrained_backbone_defaults_to_openai_statistics(tmp_path: Path) -> None:
    make_backbone(tmp_path, with_preprocessor=False)
    cfg = ModelConfig(backbone=str(tmp_path), max_text_len=16)
    build_model(cfg, None)
    assert cfg.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert cfg.image_std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    with pytest.raises(ValueError, match="max_text_len"):
        build_model(ModelConfig(backbone=str(tmp_path), max_text_len=17), None)


def test_from_scratch_needs_captions() -> None:
    with pytest.raises(ValueError, match="captions"):
        build_model(tiny_model_config(), None)
