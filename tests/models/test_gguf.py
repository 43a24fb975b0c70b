"""GGUF conversion against two independent references: the original (unquantized) checkpoint, and
transformers loading the same GGUF file itself. The GGUF files are written here the way llama.cpp's
converter writes them (its names, q/k row permutation for Llama, Gemma's 1 + w norms, quantized
blocks of several types)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from r1zero.cli import main
from r1zero.config import ModelConfig
from r1zero.errors import UserError
from r1zero.models import hf
from r1zero.models.gguf import convert_gguf
from r1zero.tokenizer import Tokenizer
from tests.conftest import hf_logits, make_hf_checkpoint

TEXTS = ["Q: 47*86=? <think> 47*6=282 47*80=3760 </think> A: 4042", "Wait, let me verify: 12 + 30 = 42.",
         "The quick brown fox<|endoftext|> jumps"]
MIXED = [gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q5_0,
          gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16]
LAYER_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
               "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf `permute` (Llama q and k rows)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_cpp_rope_freqs(cfg: dict, base: float, dim: int, rope_scaling: dict) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf LlamaModel.generate_extra_tensors, as it is written there
    (including its original context from the top-level config, 8192 by default)."""
    import math

    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rope_scaling.get("factor", 8.0)
    low_freq_factor = rope_scaling.get("low_freq_factor", 1.0)
    high_freq_factor = rope_scaling.get("high_freq_factor", 4.0)
    old_context_len = cfg.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(rope_factors, np.float32)


def write_gguf(model_dir: Path, path: Path, arch: str, qtypes=(gguf.GGMLQuantizationType.Q8_0,)) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(str(path), arch)
    L, H, K = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w.add_block_count(L)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(H)
    w.add_head_count_kv(K)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // H
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rope = cfg.get("rope_parameters") or {}
    theta = cfg.get("rope_theta") or rope.get("rope_theta") or rope["full_attention"]["rope_theta"]
    w.add_rope_freq_base(theta)
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type") == "llama3" else None)
    if arch == "llama" and scaling:
        w.add_tensor("rope_freqs.weight", llama_cpp_rope_freqs(cfg, theta, head_dim, scaling))
    if arch == "gemma3":
        w.add_sliding_window(cfg["sliding_window"])
        if cfg.get("final_logit_softcapping") is not None:
            w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    vocab = sorted({**tok["model"]["vocab"], **{t["content"]: t["id"] for t in tok["added_tokens"]}}.items(),
                   key=lambda kv: kv[1])
    special = {t["content"] for t in tok["added_tokens"] if t["special"]}
    tokens = [t for t, _ in vocab] + [f"[PAD{i}]" for i in range(len(vocab), cfg["vocab_size"])]  # as llama.cpp pads
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 5 if t.startswith("[PAD") else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    eos = tok["model"]["vocab"].get("<|endoftext|>") or next(t["id"] for t in tok["added_tokens"])
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    w.add_chat_template("{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>")
    tensors = load_file(model_dir / "model.safetensors")
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    gemma_norms = {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                   "post_feedforward_layernorm": "post_ffw_norm"}
    names = {**LAYER_NAMES, **(gemma_norms if arch == "gemma3" else {"post_attention_layernorm": "ffn_norm"})}
    for i, (name, x) in enumerate(sorted(tensors.items())):
        x = x.astype(np.float32)
        if name in top:
            gname = top[name]
        else:
            _, _, layer, *rest = name.split(".")
            module, kind = ".".join(rest[:-1]), rest[-1]
            gname = f"blk.{layer}.{names[module]}.{kind}"
        if arch == "llama" and gname.endswith(("attn_q.weight", "attn_k.weight")):
            x = llama_cpp_permute(x, H if "attn_q" in gname else K)
        if arch == "gemma3" and gname.endswith("norm.weight"):
            x = x + 1.0  # llama.cpp stores Gemma's (1 + w)
        if x.ndim == 1:
            w.add_tensor(gname, x)
        else:
            qtype = qtypes[i % len(qtypes)]
            w.add_tensor(gname, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def llama_plain_rope(tmp_path_factory) -> Path:
    """Llama (SmolLM2-like): no rope scaling (Llama 3.1's scaling travels as a rope_freqs tensor)."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "llama_plain", "llama", rope_scaling=None)


@pytest.fixture(scope="module")
def llama3_scaled(tmp_path_factory) -> Path:
    """Llama 3.1 style rope scaling (original context 8192, as llama.cpp assumes); head_dim 32 and
    base 10,000 put two frequencies in the smooth band, so its factors can be fitted."""
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "llama31", "llama", rope_scaling=scaling,
                              rope_theta=10000.0, head_dim=32)


@pytest.fixture(scope="module")
def gemma3_six_layers(tmp_path_factory) -> Path:
    """Gemma 3 as llama.cpp lays it out: every 6th layer global, the attention scale 1/sqrt(head_dim)."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "gemma3_6", "gemma3", num_hidden_layers=6,
                              layer_types=["sliding_attention"] * 5 + ["full_attention"], query_pre_attn_scalar=16)


def r1zero_logits(model_dir: Path, ids: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp

    from r1zero.models import positions_from_mask

    model, _ = hf.load_model(model_dir)
    mask = jnp.ones(ids.shape, bool)
    return np.asarray(model(jnp.asarray(ids), positions_from_mask(mask), mask)[0])


@pytest.mark.parametrize("arch", ["llama", "llama3.1", "qwen2", "qwen3", "gemma3"])
def test_a_converted_gguf_is_the_original_model(arch, qwen2_dir, llama_plain_rope, llama3_scaled, qwen3_dir,
                                                gemma3_six_layers, tmp_path):
    """Written as llama.cpp writes it (Q8_0 blocks), converted back: the original model's logits up to
    Q8_0 rounding (so the layout is right, not merely self-consistent) and its tokenizer's ids.
    Covers what only the metadata says: Qwen3's head_dim (24, not width / heads), Gemma 3's
    attention scale (llama.cpp's 1/sqrt(head_dim)) and final soft cap."""
    original = {"llama": llama_plain_rope, "llama3.1": llama3_scaled, "qwen2": qwen2_dir, "qwen3": qwen3_dir,
                "gemma3": gemma3_six_layers}[arch]
    arch = "llama" if arch == "llama3.1" else arch
    write_gguf(original, tmp_path / "m.gguf", arch)
    assert main(["convert", "--gguf", str(tmp_path / "m.gguf"), "--out", str(tmp_path / "hf")]) == 0
    assert hf.read_config(tmp_path / "hf").architecture == arch
    assert hf.read_config(tmp_path / "hf").rope_scaling == hf.read_config(original).rope_scaling
    ids = np.random.default_rng(0).integers(0, 300, (1, 40))
    ours, unquantized = r1zero_logits(tmp_path / "hf", ids), hf_logits(original, ids)
    # Q8_0 rounding moves these peaked random models' logits by ~2-5%; a wrong layout (q/k rows not
    # put back, a norm off by one, a wrong attention scale) moves them by ~50-100%
    assert np.linalg.norm(ours - unquantized) / np.linalg.norm(unquantized) < 0.1
    tok = Tokenizer(tmp_path / "hf")
    for text in TEXTS:
        assert tok.encode(text) == Tokenizer(original).encode(text), text
    meta = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert meta["chat_template"].startswith("{% for m in messages %}") and tok.eos_ids


@pytest.mark.parametrize("arch, quantization", [("llama", "mixed"), ("qwen2", "Q8_0"), ("qwen3", "Q8_0"),
                                                ("gemma3", "Q8_0")])
def test_a_converted_gguf_is_what_transformers_reads_from_it(arch, quantization, qwen2_dir, llama_plain_rope,
                                                             tmp_path_factory, tmp_path):
    """transformers reading the same GGUF file itself (its own torch dequantization of Q8_0, Q4_0,
    Q5_0, Q4_1, F16 and BF16 blocks) gives the same logits and token ids. Its GGUF reader (5.24)
    takes Qwen3's head_dim as 128 and Gemma 3's attention scale as 256 whatever the file says, and
    drops the final soft cap, so these checkpoints stay within what it reads right."""
    import torch
    import transformers

    made = tmp_path_factory.mktemp("hf")
    original = {"llama": llama_plain_rope, "qwen2": qwen2_dir,
                "qwen3": lambda: make_hf_checkpoint(made / "q3", "qwen3", head_dim=128),
                "gemma3": lambda: make_hf_checkpoint(made / "g3", "gemma3", num_hidden_layers=6, head_dim=256,
                                                     query_pre_attn_scalar=256, final_logit_softcapping=None,
                                                     layer_types=["sliding_attention"] * 5 + ["full_attention"])}[arch]
    original = original() if callable(original) else original
    write_gguf(original, tmp_path / "m.gguf", arch, MIXED if quantization == "mixed" else (gguf.GGMLQuantizationType.Q8_0,))
    convert_gguf(tmp_path / "m.gguf", tmp_path / "hf")
    ids = np.random.default_rng(0).integers(0, 300, (1, 40))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    with torch.no_grad():
        reference = theirs.eval()(torch.tensor(ids)).logits.numpy()
    assert np.abs(r1zero_logits(tmp_path / "hf", ids) - reference).max() < 1e-5 * np.abs(reference).max()
    gguf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    for text in TEXTS:
        assert Tokenizer(tmp_path / "hf").encode(text) == gguf_tok(text)["input_ids"], text


def test_damaged_or_unsupported_files_are_named(qwen2_dir, tmp_path):
    path = tmp_path / "m.gguf"
    write_gguf(qwen2_dir, path, "qwen2")
    whole = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[: len(whole) * 2 // 3])  # a download cut short
    with pytest.raises(UserError, match=r"cut.gguf: not a readable GGUF file .*is it complete"):
        convert_gguf(tmp_path / "cut.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written from a bad file
    with pytest.raises(FileNotFoundError, match="nope.gguf does not exist"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    w = gguf.GGUFWriter(str(tmp_path / "mamba.gguf"), "mamba")
    w.add_tokenizer_model("gpt2")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError, match="GGUF architecture 'mamba' is not supported"):
        convert_gguf(tmp_path / "mamba.gguf", tmp_path / "out")


SPM_TEXTS = ["    indented\tcode", "Q: 47*86=? <think> 47*6=282 47*80=3760 </think> A: 4042", " Wait,  let me   verify:\n\n12 + 30 = 42.",
             "naïve café — 中文 🙂 ünknown", "<start_of_turn>user\nhi<end_of_turn>", "a", ""]


@pytest.mark.parametrize("style", ["llama2", "gemma"])
def test_sentencepiece_vocabularies_tokenize_like_sentencepiece(style, tmp_path):
    """A SentencePiece BPE model trained here, written into a GGUF as llama.cpp's converter writes one
    (pieces, scores, token types; no merges), rebuilt by r1zero: the same ids as sentencepiece itself
    and as transformers' own reading of the file, on text with spaces, rare characters (byte
    fallback), user-defined and control pieces. `gemma`: no space prefix, runs of spaces as
    user-defined pieces stored as spaces (as Gemma's files have them)."""
    import sentencepiece as spm
    import transformers

    from tests.conftest import CORPUS

    gemma = style == "gemma"
    spaces = ["\u2581" * n for n in range(2, 5)] if gemma else []
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_prefix=str(tmp_path / "sp"), model_type="bpe", vocab_size=420,
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity", add_dummy_prefix=not gemma,
        remove_extra_whitespaces=False, user_defined_symbols=["<think>", "</think>", *spaces],
        control_symbols=["<start_of_turn>", "<end_of_turn>"], bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    n = sp.get_piece_size()
    kind = lambda i: (2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                      else 4 if sp.id_to_piece(i) in ("<think>", "</think>", *spaces) else 1)
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "gemma3" if gemma else "llama")  # transformers reads by arch
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i).replace("\u2581", " ") if sp.id_to_piece(i) in spaces else sp.id_to_piece(i)
                      for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types([kind(i) for i in range(n)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(not gemma)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    from r1zero.models.gguf import hf_tokenizer, open_gguf

    tok, config, ids = hf_tokenizer(open_gguf(tmp_path / "t.gguf"))
    assert (ids["bos"], ids["eos"], config["bos_token"]) == (1, 2, "<s>")
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="t.gguf")
    for text in SPM_TEXTS:
        # sentencepiece cuts control pieces into characters (it only emits them as ids); llama.cpp
        # and transformers match them whole: compare with sentencepiece on each side of them
        parts = text.replace("<end_of_turn>", "<start_of_turn>").split("<start_of_turn>")
        # A text that starts with a space gets no second one in front (as transformers' Llama
        # tokenizers; sentencepiece adds it regardless)
        if len(parts) == 1 and not (text.startswith(" ") and not gemma):
            assert tok.encode(text).ids == [1] + sp.encode(text), (style, text)
            assert tok.decode(tok.encode(text).ids, skip_special_tokens=True) == sp.decode(sp.encode(text)) == text
        assert tok.encode(text).ids == reference(text)["input_ids"], (style, text)


def test_an_unsupported_tokenizer_kind_is_named(tmp_path):
    from r1zero.models.gguf import hf_tokenizer, open_gguf

    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    w.add_tokenizer_model("bert")
    w.add_token_list(["[CLS]", "a"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError, match="GGUF tokenizer 'bert' is not supported"):
        hf_tokenizer(open_gguf(tmp_path / "t.gguf"))


@pytest.mark.parametrize("theta, dim, factor", [(500000.0, 64, 32.0), (500000.0, 128, 8.0), (500000.0, 16, 8.0),
                                                (10000.0, 32, 8.0)])
def test_llama3_rope_scaling_is_recovered_from_rope_freqs(theta, dim, factor, tmp_path):
    """Llama 3.2 1B (base 500,000, head_dim 64, factor 32), Llama 3.1 8B (head_dim 128, factor 8), and
    a head whose smooth band holds one frequency: the factors llama.cpp writes give back a
    rope_scaling whose frequencies are the original ones. Factors of another shape are refused."""
    from r1zero.config import RopeScaling
    from r1zero.models.decoder import rope_inv_freq
    from r1zero.models.gguf import _llama3_scaling, open_gguf

    scaling = {"factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    for name, freqs in (("ok", llama_cpp_rope_freqs({}, theta, dim, scaling)),
                        ("odd", np.linspace(1, factor, dim // 2, dtype=np.float32) ** 1.5)):
        w = gguf.GGUFWriter(str(tmp_path / f"{name}.gguf"), "llama")
        w.add_tensor("rope_freqs.weight", freqs)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    got = _llama3_scaling(open_gguf(tmp_path / "ok.gguf"), dim, theta)
    original = ModelConfig(head_dim=dim, rope_theta=theta, rope_scaling=RopeScaling(factor, 1.0, 4.0, 8192))
    np.testing.assert_allclose(rope_inv_freq(dataclasses.replace(original, rope_scaling=got)),
                               rope_inv_freq(original), rtol=1e-6)
    with pytest.raises(UserError, match="rope_freqs: not Llama 3 style scaling"):
        _llama3_scaling(open_gguf(tmp_path / "odd.gguf"), dim, theta)


def tokenizer_gguf(path: Path, **fields) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(fields.get("tokens", ["<unk>", "<s>", "\u2581a", "a", "\u2581"]))
    if "scores" in fields:
        w.add_token_scores(fields["scores"])
    if "types" in fields:
        w.add_token_types(fields["types"])
    if "bos" in fields:
        w.add_bos_token_id(fields["bos"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("fields, message", [
    ({"scores": [0.0, 0.0]}, "tokenizer.ggml.scores has 2 entries for 5 tokens"),
    ({"types": [1, 1, 1]}, "tokenizer.ggml.token_type has 3 entries for 5 tokens"),
    ({"bos": 9}, r"tokenizer.ggml.bos_token_id \(9\) is not one of its 5 tokens"),
])
def test_inconsistent_tokenizer_metadata_is_named(fields, message, tmp_path):
    from r1zero.models.gguf import hf_tokenizer, open_gguf

    with pytest.raises(UserError, match=message):
        hf_tokenizer(open_gguf(tokenizer_gguf(tmp_path / "t.gguf", **fields)))


def test_converting_into_a_directory_that_held_a_sharded_model_leaves_none_of_it(qwen2_dir, tmp_path):
    old = make_hf_checkpoint(tmp_path / "old", "qwen2", seed=3, max_shard_size="20KB")
    assert (old / "model.safetensors.index.json").is_file()
    write_gguf(qwen2_dir, tmp_path / "m.gguf", "qwen2")
    convert_gguf(tmp_path / "m.gguf", old)
    assert not (old / "model.safetensors.index.json").exists() and not list(old.glob("model-*-of-*.safetensors"))
    ids = np.random.default_rng(0).integers(0, 300, (1, 12))
    assert np.linalg.norm(r1zero_logits(old, ids) - hf_logits(qwen2_dir, ids)) < 0.1 * np.linalg.norm(hf_logits(qwen2_dir, ids))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        convert_gguf(tmp_path / "m.gguf", tmp_path / "file")
