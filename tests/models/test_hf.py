"""Parity with transformers on random checkpoints it built itself, export round trip, and errors."""

from __future__ import annotations

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from r1zero.models import hf, per_token_logprobs, positions_from_mask, to_host_arrays
from r1zero.tokenizer import Tokenizer
from tests.conftest import hf_logits, make_hf_checkpoint


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


def token_ids(model_dir, texts):
    tok = Tokenizer(model_dir)
    return [tok.encode(t) for t in texts]


FAMILIES = ["qwen2", "llama", "qwen3", "gemma3"]


@pytest.fixture
def family_dir(request, qwen2_dir, llama_dir, qwen3_dir, gemma3_dir):
    return {"qwen2": qwen2_dir, "llama": llama_dir, "qwen3": qwen3_dir, "gemma3": gemma3_dir}


@pytest.mark.parametrize("arch", FAMILIES)
def test_logits_match_transformers(arch, family_dir):
    model_dir = family_dir[arch]
    model, config = hf.load_model(model_dir)
    assert config.architecture == arch
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (2, 48))
    ref = hf_logits(model_dir, ids)
    ours, _ = model(jnp.asarray(ids), positions_from_mask(jnp.ones(ids.shape, bool)), jnp.ones(ids.shape, bool))
    assert rel_err(ours, ref) < 1e-5
    assert np.abs(np.asarray(ours) - ref).max() < 1e-5 * np.abs(ref).max()  # no single logit is off


@pytest.mark.parametrize("arch", FAMILIES)
def test_bfloat16_logits_match_transformers_in_bfloat16(arch, family_dir):
    """Both sides in bfloat16 (weights and compute): the same model up to bf16 rounding (float32
    against float32 is held to 1e-5 above)."""
    import torch
    import transformers

    model_dir = family_dir[arch]
    model, _ = hf.load_model(model_dir, param_dtype="bfloat16")
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 32))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        ref = theirs(torch.tensor(ids)).logits.float().numpy()
    ours, _ = model(jnp.asarray(ids), positions_from_mask(jnp.ones(ids.shape, bool)), jnp.ones(ids.shape, bool))
    f32 = hf_logits(model_dir, ids)
    # As close to transformers-in-bf16 as that is to float32 (these peaked random models make bf16
    # rounding large: ~3e-2); a wrong norm order or activation in bf16 is several times that.
    assert rel_err(ours, ref) < 1.5 * rel_err(ref, f32), (rel_err(ours, ref), rel_err(ref, f32))


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_transformers_with_left_padding(arch, temperature, family_dir):
    model_dir = family_dir[arch]
    model, _ = hf.load_model(model_dir)
    # Tokenize once with tokenizer.json and feed both implementations the same ids.
    rows = token_ids(model_dir, ["Q: 47*86=? <think> 47*6=282", "Wait, let me verify: 12 + 30 = 42"])
    T = max(map(len, rows))
    ids = np.zeros((2, T), np.int64)
    mask = np.zeros((2, T), bool)
    for i, r in enumerate(rows):  # left padding
        ids[i, T - len(r):], mask[i, T - len(r):] = r, True
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    logits = hf_logits(model_dir, ids, attention_mask=mask, position_ids=positions).astype(np.float64)
    logp_ref = logits / temperature - _logsumexp(logits / temperature)
    ref = np.take_along_axis(logp_ref[:, :-1], ids[:, 1:, None], -1)[..., 0]

    logp, _ = per_token_logprobs(model, jnp.asarray(ids), jnp.asarray(mask), temperature, chunk_tokens=16)
    scored = mask[:, 1:] & mask[:, :-1]
    np.testing.assert_allclose(np.asarray(logp)[:, 1:][scored], ref[scored], atol=2e-5)
    assert np.all(np.asarray(logp)[:, 1:][~scored] == 0)


def _logsumexp(x):
    m = x.max(-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.mark.parametrize("arch", FAMILIES)
def test_export_round_trip(arch, family_dir, tmp_path):
    model_dir = family_dir[arch]
    model, config = hf.load_model(model_dir)
    out = hf.save_model(model, tmp_path / "export", tokenizer_dir=model_dir)
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()
    # transformers loads the export and computes the original model's logits.
    ids = np.random.default_rng(1).integers(0, config.vocab_size, (1, 40))
    np.testing.assert_allclose(hf_logits(out, ids), hf_logits(model_dir, ids), atol=1e-6)
    # The exported tensors are exactly the original ones.
    original, exported = load_file(model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    expected_names = set(original) - ({"lm_head.weight"} if config.tie_embeddings else set())
    assert set(exported) == expected_names
    for name, value in exported.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)


def test_sharded_bf16_checkpoint(tmp_path):
    model_dir = make_hf_checkpoint(tmp_path / "m", "qwen2", dtype="bfloat16", max_shard_size="100KB")
    assert (model_dir / "model.safetensors.index.json").is_file()
    model, config = hf.load_model(model_dir)
    assert config.param_dtype == "float32"  # CPU default; the bf16 values are kept exactly
    tensors = {}
    for f in set(json.loads((model_dir / "model.safetensors.index.json").read_text())["weight_map"].values()):
        tensors.update(load_file(model_dir / f))
    q = tensors["model.layers.1.self_attn.q_proj.weight"].astype(np.float32)
    np.testing.assert_array_equal(to_host_arrays(model)["layers"]["attn"]["q"][1], q.T.reshape(64, 4, 16))
    model_bf16, cfg_bf16 = hf.load_model(model_dir, param_dtype="bfloat16")
    assert model_bf16.embed[...].dtype == jnp.bfloat16 and cfg_bf16.compute_dtype == "bfloat16"


def test_tokenizer_reads_special_ids(qwen2_dir):
    tok = Tokenizer(qwen2_dir)
    eos = tok.token_to_id("<|endoftext|>")
    assert tok.eos_ids == (eos,) and tok.pad_id == eos
    text = "Q: 47*86=? <think>"
    assert tok.decode(tok.encode(text)) == text


# ---------------------------------------------------------------------------------------------------
# Errors a user will hit name the problem.


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf.load_model(tmp_path / "nope")


def test_missing_config_and_weights(qwen2_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(qwen2_dir, d)
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="neither model.safetensors"):
        hf.load_model(d)
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        hf.load_model(d)


def test_damaged_files_are_named(qwen2_dir, tmp_path):
    from r1zero.errors import UserError
    from r1zero.tokenizer import Tokenizer

    d = tmp_path / "m"
    shutil.copytree(qwen2_dir, d)
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # a download cut short
    with pytest.raises(UserError, match=r"model.safetensors.*(not a readable safetensors file|cannot be read)"):
        hf.load_model(d)
    (d / "model.safetensors").write_bytes(weights[:100])  # not even a whole header
    with pytest.raises(UserError, match=r"model.safetensors: not a readable safetensors file"):
        hf.load_model(d)
    (d / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
    with pytest.raises(UserError, match=r"tokenizer.json: not a readable tokenizer"):
        Tokenizer(d)
    (d / "config.json").write_text("{oops")
    with pytest.raises(UserError, match=r"m/config.json: not valid JSON"):
        hf.load_model(d)


def test_unsupported_architecture(qwen2_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(qwen2_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported model.*GPT2LMHeadModel"):
        hf.load_model(d)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("model.layers.2.mlp.up_proj.weight"), "missing tensor 'model.layers.2.mlp.up_proj.weight'"),
        (lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": np.zeros((16, 64), np.float32)}),
         r"'model.layers.0.self_attn.k_proj.weight' has shape \(16, 64\), expected \(32, 64\)"),
        (lambda t: t.update({"model.layers.0.mlp.gate_proj.bias": np.zeros((96,), np.float32)}),
         "unexpected tensors.*gate_proj.bias"),
    ],
)
def test_bad_tensors_are_named(edit, message, qwen2_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(qwen2_dir, d)
    tensors = load_file(d / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=message):
        hf.load_model(d)


def test_a_run_model_section_must_agree_with_config_json_but_chooses_dtypes_and_remat(qwen2_dir):
    import dataclasses

    from r1zero.config import ModelConfig
    from r1zero.errors import UserError

    loaded = hf.read_config(qwen2_dir)
    assert hf.agree(loaded, ModelConfig(), qwen2_dir) == loaded  # left out: everything from config.json
    assert hf.agree(loaded, loaded, qwen2_dir) == loaded  # a recipe naming the exact architecture
    chosen = hf.agree(loaded, dataclasses.replace(ModelConfig(), remat=True, param_dtype="bfloat16"), qwen2_dir)
    assert chosen == dataclasses.replace(loaded, remat=True, param_dtype="bfloat16", compute_dtype="bfloat16")
    wrong = dataclasses.replace(loaded, hidden_size=loaded.hidden_size * 2, num_layers=loaded.num_layers + 1)
    with pytest.raises(UserError, match=r"hidden_size=128 \(config.json: 64\), num_layers=4 \(config.json: 3\)"):
        hf.agree(loaded, wrong, qwen2_dir)
