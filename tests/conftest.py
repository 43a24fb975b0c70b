"""Shared fixtures: tiny random Hugging Face checkpoints built by transformers itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = [
    "Q: 47*86=? <think> 47*6=282 47*80=3760 282+3760=4042 </think> A: 4042",
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it.",
    "Wait, let me verify: 12 + 30 = 42, so the answer is 42.",
    "The quick brown fox jumps over the lazy dog. 0123456789 +-*/=()",
]
EOS = "<|endoftext|>"


def write_tokenizer(model_dir: Path, vocab_size: int = 300) -> int:
    """Trains a small byte-level BPE (the kind Qwen ships) and writes tokenizer.json; returns EOS id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(model_dir / "tokenizer.json"))
    return tok.token_to_id(EOS)


# Small shapes that still exercise GQA (4 query heads share 2 KV heads).
SMALL = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
             initializer_range=0.2)  # peaked logits: greedy decoding of a random model does not just repeat


def make_hf_checkpoint(model_dir: Path, arch: str, dtype: str = "float32", seed: int = 0,
                       max_shard_size: str | None = None, **overrides) -> Path:
    """Saves a random transformers model of family `arch` ('qwen2' or 'llama') with a tokenizer."""
    import torch
    import transformers

    model_dir.mkdir(parents=True, exist_ok=True)
    eos = write_tokenizer(model_dir)
    kwargs = {**SMALL, "eos_token_id": eos, "bos_token_id": eos, **overrides}
    if arch == "qwen2":
        config = transformers.Qwen2Config(**{"tie_word_embeddings": True, "rope_theta": 10000.0, **kwargs})
        cls = transformers.Qwen2ForCausalLM
    elif arch == "qwen3":  # per-head q/k norms; head_dim not hidden_size / heads
        config = transformers.Qwen3Config(**{"tie_word_embeddings": False, "rope_theta": 10000.0, "head_dim": 24,
                                             **kwargs})
        cls = transformers.Qwen3ForCausalLM
    elif arch == "gemma3":  # (1 + w) norms around each sublayer, GeGLU, scaled embeddings, sliding layers
        config = transformers.Gemma3TextConfig(**{
            "head_dim": 16, "query_pre_attn_scalar": 20, "sliding_window": 5, "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"], **kwargs})
        cls = transformers.Gemma3ForCausalLM
    else:
        config = transformers.LlamaConfig(**{
            "tie_word_embeddings": False,
            "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
            **kwargs,
        })
        cls = transformers.LlamaForCausalLM
    torch.manual_seed(seed)
    model = cls(config).to(getattr(torch, dtype))
    with torch.no_grad():  # random biases and norms, so that a dropped one would show in the logits
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(model_dir, **save_kwargs)
    (model_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos], "pad_token_id": eos}))
    return model_dir


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory) -> Path:
    """Qwen2: GQA, q/k/v bias, tied embeddings."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "qwen2", "qwen2")


@pytest.fixture(scope="session")
def qwen3_dir(tmp_path_factory) -> Path:
    """Qwen3: q/k RMSNorm per head, no bias, head_dim independent of the width, untied."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "qwen3", "qwen3")


@pytest.fixture(scope="session")
def gemma3_dir(tmp_path_factory) -> Path:
    """Gemma 3 (text): sandwich (1 + w) norms, q/k norms, GeGLU, scaled embeddings, a sliding window of
    5 on layers 0 and 2 with their own rope base, soft-capped logits, tied embeddings (and an
    attn_logit_softcapping that transformers' Gemma 3 ignores, so r1zero must too)."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "gemma3", "gemma3")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    """Llama 3: GQA, untied embeddings, llama3 rope scaling, no bias."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "llama", "llama")


def hf_logits(model_dir: Path, ids, attention_mask=None, position_ids=None):
    """float32 logits of transformers' own model on the given token ids (numpy)."""
    import numpy as np
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.tensor(np.asarray(attention_mask), dtype=torch.long)
    if position_ids is not None:
        kwargs["position_ids"] = torch.tensor(np.asarray(position_ids), dtype=torch.long)
    with torch.no_grad():
        out = model(torch.tensor(np.asarray(ids), dtype=torch.long), **kwargs)
    return out.logits.float().numpy()
