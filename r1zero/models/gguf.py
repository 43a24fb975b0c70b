"""GGUF files (llama.cpp) to Hugging Face directories that r1zero and transformers load.

`convert_gguf(path, out_dir)` writes config.json, model.safetensors (every tensor dequantized by the
`gguf` package, renamed to the Hugging Face names), tokenizer.json rebuilt from the vocabulary and
merges the file embeds, tokenizer_config.json (chat template, special tokens) and
generation_config.json. Three llama.cpp conventions are undone on the way: the rows of q and k of
Llama-architecture models are permuted for its rope kernel (put back), Gemma's norms are stored
as 1 + w (stored back as w), and Llama 3.1+ rope scaling is stored as per-frequency factors
(`rope_freqs`, turned back into config.json's rope_scaling).

Supported: architectures llama, qwen2, qwen3 and gemma3; byte-level BPE vocabularies
(`tokenizer.ggml.model = gpt2`) with the pre-tokenizers below, and SentencePiece BPE vocabularies
(`llama`: Llama 2 style and Gemma). Anything else is named in the error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from r1zero.config import ModelConfig, RopeScaling
from r1zero.errors import MissingFileError, UserError

_REQUIRED = object()

# llama.cpp tensor names -> Hugging Face names ({i}: the layer).
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}
_LAYER = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
          "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj", "ffn_norm": "post_attention_layernorm",
          "post_attention_norm": "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}
_GEMMA_LAYER = {**_LAYER, "ffn_norm": "pre_feedforward_layernorm"}  # Gemma's post_attention_norm is the sandwich

# Pre-tokenizer splits by `tokenizer.ggml.pre` (the regexes llama.cpp and the original tokenizers use).
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {  # name -> splits applied in order (the last one feeds the byte-level alphabet)
    "default": [_GPT2_SPLIT], "gpt2": [_GPT2_SPLIT], "smollm": [r"\p{N}", _GPT2_SPLIT],
    "qwen2": [_QWEN2_SPLIT], "deepseek-r1-qwen": [_QWEN2_SPLIT],
    "llama-bpe": [_LLAMA3_SPLIT], "llama3": [_LLAMA3_SPLIT], "llama-v3": [_LLAMA3_SPLIT],
}
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6  # llama.cpp token types


def open_gguf(path: str | os.PathLike):
    """A GGUFReader over `path`; a missing, truncated or corrupt file is a UserError naming it,
    raised before any tensor is used."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} {'is a directory, not a GGUF file' if path.is_dir() else 'does not exist'}")
    try:
        reader = gguf.GGUFReader(str(path))
        size = path.stat().st_size
        for t in reader.tensors:  # every tensor's bytes lie inside the file
            if t.data_offset + t.n_bytes > size:
                raise ValueError(f"tensor {t.name} ends at byte {t.data_offset + t.n_bytes:,} of {size:,}")
    except (ValueError, IndexError, KeyError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e}); is it complete?") from None
    return reader


def meta(reader, key: str, default: Any = _REQUIRED) -> Any:
    """The value of metadata `key` (a missing required key is a UserError naming it)."""
    field = reader.fields.get(key)
    if field is None:
        if default is _REQUIRED:
            raise UserError(f"the GGUF file has no {key!r}")
        return default
    return field.contents()


def model_config(reader) -> ModelConfig:
    """The ModelConfig the file's metadata describes (float32; `hf.save`-able)."""
    arch = meta(reader, "general.architecture")
    if arch not in ("llama", "qwen2", "qwen3", "gemma3"):
        raise UserError(f"GGUF architecture {arch!r} is not supported (llama, qwen2, qwen3, gemma3)")
    names = {t.name for t in reader.tensors}
    if meta(reader, f"{arch}.rope.scaling.type", "none") not in ("none", None):
        raise UserError(f"GGUF rope scaling {meta(reader, f'{arch}.rope.scaling.type')!r} is not supported yet")
    D, H = meta(reader, f"{arch}.embedding_length"), meta(reader, f"{arch}.attention.head_count")
    L = meta(reader, f"{arch}.block_count")
    head_dim = meta(reader, f"{arch}.attention.key_length", D // H)
    fields = dict(
        architecture=arch, vocab_size=next(int(t.shape[1]) for t in reader.tensors if t.name == "token_embd.weight"),
        hidden_size=D,
        intermediate_size=meta(reader, f"{arch}.feed_forward_length"), num_layers=L, num_heads=H,
        num_kv_heads=meta(reader, f"{arch}.attention.head_count_kv", H), head_dim=head_dim,
        rope_theta=_f32(meta(reader, f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=_f32(meta(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        max_position_embeddings=int(meta(reader, f"{arch}.context_length", 32768)),
        tie_embeddings="output.weight" not in names,
        qkv_bias="blk.0.attn_q.bias" in names, o_bias="blk.0.attn_output.bias" in names,
        qk_norm="blk.0.attn_q_norm.weight" in names,
    )
    if arch == "qwen2":
        fields["o_bias"] = False
    if "rope_freqs.weight" in names:
        if arch != "llama":
            raise UserError(f"GGUF rope_freqs in a {arch} model is not supported (Llama 3.1+ scaling only)")
        fields["rope_scaling"] = _llama3_scaling(reader, head_dim, fields["rope_theta"])
    if arch == "gemma3":
        window, pattern = meta(reader, "gemma3.attention.sliding_window", 4096), 6  # llama.cpp: every 6th is global
        fields.update(
            norm_plus_one=True, sandwich_norms=True, embed_scale=True, hidden_act="gelu_tanh",
            # llama.cpp's attention scale: 1/sqrt(head_dim), but 1/sqrt(D / H) for the 27B (62 layers)
            query_pre_attn_scalar=float(D // H if L == 62 else head_dim),
            final_softcap=meta(reader, "gemma3.final_logit_softcapping", None), sliding_window=int(window),
            layer_types=tuple("full" if (i + 1) % pattern == 0 else "sliding" for i in range(L)),
            rope_local_theta=10000.0,  # not in the file (the same for every Gemma 3)
        )
    return ModelConfig(**fields)


def _f32(x) -> float:
    """A float32 metadata value as the decimal it was written from (9.99999997e-07 -> 1e-06)."""
    return float(f"{float(x):.7g}")


def _llama3_factors(inv_freq: np.ndarray, s: RopeScaling) -> np.ndarray:
    """llama.cpp's rope_freqs for Llama 3 scaling (convert_hf_to_gguf.py): per frequency, how much
    its wavelength is stretched (1 for short ones, `factor` for long ones, smooth in between)."""
    wavelen = 2 * np.pi / inv_freq
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    medium = 1 / ((1 - smooth) / s.factor + smooth)
    return np.where(wavelen < s.original_max_position_embeddings / s.high_freq_factor, 1.0,
                    np.where(wavelen > s.original_max_position_embeddings / s.low_freq_factor, s.factor, medium))


def _llama3_scaling(reader, head_dim: int, theta: float) -> RopeScaling:
    """Llama 3.1+ rope scaling from the per-frequency factors llama.cpp stores instead (rope_freqs):
    factor = the largest; low/high_freq_factor fitted to the smooth band (or Meta's 1 and 4 where
    the band is too narrow to fit); the original context llama.cpp assumes (8192, unless the file
    says). The factors recomputed from these must be the file's, else the file is refused."""
    from gguf import quants

    t = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    stored = np.asarray(quants.dequantize(t.data, t.tensor_type), np.float64).reshape(-1)
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if len(stored) != len(inv_freq) or not np.all(np.isfinite(stored)) or not np.all(stored >= 1):
        raise UserError(f"GGUF rope_freqs: {len(stored)} factors for {len(inv_freq)} frequencies, or factors that "
                        f"are not finite and >= 1; not Llama 3 style scaling")
    factor = float(stored.max())
    old = int(meta(reader, "llama.rope.scaling.original_context_length", 8192))
    band = (stored > 1 + 1e-6) & (stored < factor - 1e-6)
    ramp = old * inv_freq[band] / (2 * np.pi)  # old / wavelength, on which the smooth part is linear
    smooth = (1 / stored[band] - 1 / factor) / (1 - 1 / factor)
    low, high = 1.0, 4.0
    if band.sum() >= 2:
        slope, intercept = np.polyfit(ramp, smooth, 1)
        low, high = -intercept / slope, -intercept / slope + 1 / slope
    elif band.sum() == 1:
        high = low + (ramp[0] - low) / smooth[0]
    scaling = RopeScaling(factor=round(factor, 4), low_freq_factor=round(float(low), 3),
                          high_freq_factor=round(float(high), 3), original_max_position_embeddings=old)
    if not np.allclose(_llama3_factors(inv_freq, scaling), stored, rtol=1e-4):
        raise UserError("GGUF rope_freqs: not Llama 3 style scaling r1zero can express (rope_scaling llama3)")
    return scaling


def hf_tensors(reader, config: ModelConfig, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Every tensor dequantized and renamed to its Hugging Face name, with llama.cpp's q/k row
    permutation (Llama) and norm offset (Gemma) undone."""
    from gguf import quants

    layer_names = _GEMMA_LAYER if config.architecture == "gemma3" else _LAYER
    out = {}
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":  # config.json's rope_scaling (model_config)
            continue
        name = _hf_name(t.name, layer_names)
        try:
            w = np.asarray(quants.dequantize(t.data, t.tensor_type), np.float32)
        except NotImplementedError:
            raise UserError(f"GGUF tensor {t.name}: type {t.tensor_type.name} is not supported") from None
        if config.architecture == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = _unpermute(w, config.num_heads if "q_proj" in name else config.num_kv_heads)
        if config.norm_plus_one and name.endswith("norm.weight"):
            w = w - 1.0
        out[name] = w.astype(np.dtype(dtype) if dtype != "bfloat16" else _bfloat16())
    return out


def _hf_name(name: str, layer_names: dict[str, str]) -> str:
    if name in _TOP:
        return _TOP[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in layer_names:
        return f"model.layers.{parts[1]}.{layer_names[parts[2]]}.{parts[3]}"
    raise UserError(f"GGUF tensor {name!r} has no Hugging Face counterpart known to r1zero")


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's `permute` of q/k rows (per head: [half 0 interleaved with half 1] -> halves)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _bfloat16():
    import ml_dtypes

    return ml_dtypes.bfloat16


def hf_tokenizer(reader):
    """(tokenizers.Tokenizer, tokenizer_config, special ids) rebuilt from the file's vocabulary:
    byte-level BPE (`gpt2`) or SentencePiece BPE (`llama`)."""
    from tokenizers import AddedToken, processors

    kind = meta(reader, "tokenizer.ggml.model")
    tokens = list(meta(reader, "tokenizer.ggml.tokens"))
    if not tokens:
        raise UserError("the GGUF file's tokenizer.ggml.tokens is empty")
    types = list(meta(reader, "tokenizer.ggml.token_type", [])) or [NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise UserError(f"the GGUF file's tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    ids = {name: meta(reader, f"tokenizer.ggml.{name}_token_id", None) for name in ("bos", "eos", "padding", "unknown")}
    for name, i in ids.items():
        if i is not None and not 0 <= int(i) < len(tokens):
            raise UserError(f"the GGUF file's tokenizer.ggml.{name}_token_id ({i}) is not one of its {len(tokens)} tokens")
    if kind == "gpt2":
        tok = _byte_level_bpe(reader, tokens)
    elif kind == "llama":
        tok, tokens = _sentencepiece_bpe(reader, tokens, types, ids["unknown"])
    else:
        raise UserError(f"GGUF tokenizer {kind!r} is not supported (byte-level BPE 'gpt2' or SentencePiece 'llama')")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k == CONTROL])
    # llama.cpp matches user-defined tokens whole in the text (only those still spelled as in the file)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types)
                    if k == USER_DEFINED and tok.token_to_id(t) is not None])
    if meta(reader, "tokenizer.ggml.add_bos_token", False) and ids["bos"] is not None:
        bos = tokens[ids["bos"]]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, ids["bos"])])
    config = {"bos_token": tokens[ids["bos"]] if ids["bos"] is not None else None,
              "eos_token": tokens[ids["eos"]] if ids["eos"] is not None else None,
              "add_bos_token": bool(meta(reader, "tokenizer.ggml.add_bos_token", False))}
    template = meta(reader, "tokenizer.chat_template", None)
    if template:
        config["chat_template"] = template
    return tok, config, ids


def _byte_level_bpe(reader, tokens: list[str]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = meta(reader, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise UserError(f"GGUF pre-tokenizer {pre!r} is not supported (one of {sorted(PRE_TOKENIZERS)})")
    merges = [tuple(m.split(" ", 1)) for m in meta(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in PRE_TOKENIZERS[pre]]
    tok.pre_tokenizer = pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                    use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(reader, tokens: list[str], types: list[int], unk_id: int | None):
    """llama.cpp's SPM tokenizer as a tokenizers BPE: spaces are written "▁" (and one is put in
    front of the text if the file says so); adjacent pieces merge best score first, and a character
    that is no piece falls back to its <0xXX> byte tokens. GGUFs carry no merges: they are the
    splits of every piece into two pieces, ranked by the score of the piece they make (ties: file
    order). Gemma stores its tokens of several spaces as spaces: they are spelled "▁" again."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokens = ["\u2581" * len(t) if t and not t.strip(" ") else t for t in tokens]
    scores = list(meta(reader, "tokenizer.ggml.scores", [])) or [-float(i) for i in range(len(tokens))]
    if len(scores) != len(tokens):
        raise UserError(f"the GGUF file's tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens")
    vocab = {t: i for i, t in enumerate(tokens)}
    ranked = sorted((i for i, k in enumerate(types) if k not in (CONTROL, BYTE, UNKNOWN)),
                    key=lambda i: (types[i] != USER_DEFINED, -scores[i], i))  # user-defined pieces match whole
    merges = []
    for i in ranked:
        piece = tokens[i]
        merges += [(piece[:j], piece[j:]) for j in range(len(piece) - 1, 0, -1)
                   if piece[:j] in vocab and piece[j:] in vocab]
    unk = tokens[unk_id] if unk_id is not None else None
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    prefix = bool(meta(reader, "tokenizer.ggml.add_space_prefix", True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first" if prefix else "never",
                                                 split=False)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok, tokens


def convert_gguf(path: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "float32") -> dict:
    """Writes `out_dir` as a Hugging Face directory of the GGUF model at `path`; returns a summary
    (architecture, parameters, tensor types)."""
    from collections import Counter

    from safetensors.numpy import save_file

    from r1zero.models.hf import fresh_model_dir, hf_config_dict

    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    reader = open_gguf(path)
    config = model_config(reader)
    tok, tok_config, ids = hf_tokenizer(reader)  # before the tensors: a tokenizer we cannot build fails fast
    if tok.get_vocab_size(with_added_tokens=True) > config.vocab_size:
        raise UserError(f"the GGUF file's tokenizer has {tok.get_vocab_size(with_added_tokens=True)} tokens but its "
                        f"embedding only {config.vocab_size} rows")
    tensors = hf_tensors(reader, config, dtype)
    out = fresh_model_dir(out_dir)
    tmp = out / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")
    hf_config = hf_config_dict(config, ids["eos"], ids["bos"])
    hf_config["torch_dtype"] = dtype
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    generation = {"eos_token_id": [ids["eos"]] if ids["eos"] is not None else None, "bos_token_id": ids["bos"],
                  "pad_token_id": ids["padding"]}
    (out / "generation_config.json").write_text(json.dumps({k: v for k, v in generation.items() if v is not None},
                                                           indent=2) + "\n")
    return {"architecture": config.architecture, "layers": config.num_layers, "out": str(out),
            "parameters": int(sum(v.size for v in tensors.values())),
            "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors))}
