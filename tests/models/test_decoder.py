"""The decoder against itself in independent ways: KV-cache decoding vs one full forward, causality
by gradients, chunked log-probs vs a direct float64 computation, bounded memory, padding, remat."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from r1zero.config import MeshConfig, ModelConfig
from r1zero.models import KVCache, SharedPrefix, create_model, per_token_logprobs, positions_from_mask
from r1zero.sharding import make_mesh

CONFIG = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8, qkv_bias=True)


@pytest.fixture(scope="module")
def model():
    return create_model(CONFIG, make_mesh(MeshConfig()), seed=0)


def full_logits(model, tokens, mask):
    logits, _ = model(tokens, positions_from_mask(mask), mask)
    return np.asarray(logits, np.float64)


@pytest.mark.parametrize("prefill", [False, True])
def test_kv_cache_decode_matches_full_forward(model, prefill):
    """Prefill a left-padded prompt (through the general cache path, or the `prefill` path that
    attends among the prompt tokens only), then decode one token at a time: same logits as one pass."""
    tokens = jax.random.randint(jax.random.key(1), (3, 14), 0, CONFIG.vocab_size)
    mask = jnp.ones((3, 14), bool).at[1, :4].set(False).at[2, :1].set(False)  # left padding
    expected = full_logits(model, tokens, mask)
    positions = positions_from_mask(mask)

    step = nnx.jit(lambda m, t, p, k, c: m(t, p, k, c), donate_argnums=4)

    @nnx.jit
    def first(m, t, p, k, c):
        h, c = m.hidden_states(t, p, k, c, prefill=prefill)
        return m.logits(h), c

    cache = KVCache.create(CONFIG, batch=3, slots=16)
    got = []
    logits, cache = first(model, tokens[:, :6], positions[:, :6], mask[:, :6], cache)  # prefill 6
    got.append(logits)
    for t in range(6, 14):
        logits, cache = step(model, tokens[:, t:t + 1], positions[:, t:t + 1], mask[:, t:t + 1], cache)
        got.append(logits)
    got = np.concatenate([np.asarray(g) for g in got], axis=1)
    real = np.asarray(mask)
    np.testing.assert_allclose(got[real], expected[real], atol=1e-5)
    assert int(cache.end) == 14


def test_causality_by_gradient():
    """d loss_t / d embedding(token_s) is exactly zero for every s > t and non-zero for s <= t."""
    config = dataclasses.replace(CONFIG, tie_embeddings=False)  # so embeddings enter only as inputs
    model = create_model(config, make_mesh(MeshConfig()), seed=3)
    T = 10
    tokens = jnp.arange(T)[None] * 3 + 5  # distinct ids: each embedding row belongs to one position
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    for t in (2, 6):
        def loss(p):
            m = nnx.merge(graphdef, p, rest)
            logp, _ = per_token_logprobs(m, tokens, jnp.ones_like(tokens, bool))
            return -logp[0, t]  # the loss of predicting token t from tokens < t

        grad_embed = np.asarray(jax.grad(loss)(params)["embed"][...])
        row_norm = np.abs(grad_embed[np.asarray(tokens[0])]).sum(-1)
        assert np.all(row_norm[:t] > 0), row_norm
        assert np.all(row_norm[t:] == 0), row_norm


def _reference_logprobs(logits, tokens, mask, temperature):
    """float64 numpy: log-softmax and entropy of logits / T at the previous position."""
    z = logits[:, :-1] / temperature
    z = z - z.max(-1, keepdims=True)
    logp_all = z - np.log(np.exp(z).sum(-1, keepdims=True))
    logp = np.take_along_axis(logp_all, np.asarray(tokens)[:, 1:, None], -1)[..., 0]
    ent = -(np.exp(logp_all) * logp_all).sum(-1)
    scored = np.asarray(mask)[:, 1:] & np.asarray(mask)[:, :-1]
    return scored, logp, ent


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_tokens", [1, 21, 10_000])
def test_chunked_logprobs_equal_direct(model, temperature, chunk_tokens):
    tokens = jax.random.randint(jax.random.key(2), (3, 11), 0, CONFIG.vocab_size)
    mask = jnp.ones((3, 11), bool).at[0, :3].set(False).at[2, 9:].set(False)
    scored, ref_logp, ref_ent = _reference_logprobs(full_logits(model, tokens, mask), tokens, mask, temperature)
    logp, ent = per_token_logprobs(model, tokens, mask, temperature, chunk_tokens=chunk_tokens)
    logp, ent = np.asarray(logp)[:, 1:], np.asarray(ent)[:, 1:]
    np.testing.assert_allclose(logp[scored], ref_logp[scored], atol=1e-5)
    np.testing.assert_allclose(ent[scored], ref_ent[scored], atol=1e-5)
    assert np.all(logp[~scored] == 0) and np.all(ent[~scored] == 0)


@pytest.mark.parametrize("start", [0, 1, 4, 10])
def test_logprobs_from_a_start_column_are_the_full_passs_columns(model, start):
    tokens = jax.random.randint(jax.random.key(3), (3, 11), 0, CONFIG.vocab_size)
    mask = jnp.ones((3, 11), bool).at[0, :5].set(False).at[2, 9:].set(False)
    full_logp, full_ent = per_token_logprobs(model, tokens, mask, 0.8, chunk_tokens=6)
    logp, ent = per_token_logprobs(model, tokens, mask, 0.8, chunk_tokens=6, start=start)
    assert logp.shape == (3, 11 - start)
    np.testing.assert_allclose(np.asarray(logp), np.asarray(full_logp)[:, start:], atol=1e-6)
    np.testing.assert_allclose(np.asarray(ent), np.asarray(full_ent)[:, start:], atol=1e-6)
    with pytest.raises(ValueError, match="start"):
        per_token_logprobs(model, tokens, mask, start=11)


def test_a_one_token_sequence_has_nothing_to_score(model):
    logp, ent = per_token_logprobs(model, jnp.zeros((2, 1), jnp.int32), jnp.ones((2, 1), bool))
    assert logp.shape == ent.shape == (2, 1) and not np.asarray(logp).any()


def test_logprobs_reject_zero_temperature(model):
    with pytest.raises(ValueError, match="temperature"):
        per_token_logprobs(model, jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool), 0.0)


def test_logprobs_temporary_memory_is_bounded():
    """Forward and backward: temporaries stay far below B*T*V*4 bytes of float32 logits.

    The vocabulary dominates these shapes (attention scores are ~1% of the logits), as it does for
    Qwen (V = 151,936); what remains in the backward pass is mostly the embedding gradients.
    """
    config = dataclasses.replace(CONFIG, vocab_size=32768)
    model = create_model(config, make_mesh(MeshConfig()), seed=0)
    B, T = 16, 128
    full_bytes = B * T * config.vocab_size * 4
    tokens, mask = jnp.zeros((B, T), jnp.int32), jnp.ones((B, T), bool)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, chunk):
        logp, ent = per_token_logprobs(nnx.merge(graphdef, p, rest), tokens, mask, 1.0, chunk_tokens=chunk)
        return logp.sum() + ent.sum()

    def temp_bytes(fn, chunk):
        compiled = jax.jit(fn, static_argnums=1).lower(params, chunk).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    chunked_fwd, chunked_bwd = temp_bytes(loss, 32), temp_bytes(jax.grad(loss), 32)
    assert chunked_fwd < full_bytes / 8, (chunked_fwd, full_bytes)
    assert chunked_bwd < full_bytes / 4, (chunked_bwd, full_bytes)
    # The measurement can see the difference: one chunk as large as the batch costs the full logits.
    assert temp_bytes(loss, B * T) > 0.9 * full_bytes  # (T - 1 positions are scored)


def test_row_does_not_depend_on_left_padding(model):
    tokens = jax.random.randint(jax.random.key(4), (1, 9), 0, CONFIG.vocab_size)
    alone, _ = per_token_logprobs(model, tokens, jnp.ones((1, 9), bool))
    padded_tokens = jnp.concatenate([jnp.full((1, 5), 7), tokens], axis=1)
    padded_mask = jnp.arange(14)[None] >= 5
    padded, _ = per_token_logprobs(model, padded_tokens, padded_mask)
    np.testing.assert_allclose(np.asarray(padded)[:, 5:], np.asarray(alone), atol=1e-6)


def test_remat_gives_the_same_gradients():
    tokens = jax.random.randint(jax.random.key(5), (2, 12), 0, CONFIG.vocab_size)
    grads = []
    for remat in (False, True):
        model = create_model(dataclasses.replace(CONFIG, remat=remat), make_mesh(MeshConfig()), seed=0)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        fn = lambda p: per_token_logprobs(nnx.merge(graphdef, p, rest), tokens, jnp.ones_like(tokens, bool))[0].sum()
        grads.append(jax.jit(jax.grad(fn))(params))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.mark.parametrize("sliding", [False, True])
def test_scanned_and_unrolled_layers_give_the_same_gradients(sliding):
    """Training runs the layers unrolled (faster) unless `scan_layers`; both are the same function."""
    tokens = jax.random.randint(jax.random.key(6), (2, 12), 0, CONFIG.vocab_size)
    extra = dict(num_layers=3, sliding_window=4, layer_types=("sliding", "full", "sliding")) if sliding else {}
    grads, losses = [], []
    for scan in (False, True):
        model = create_model(dataclasses.replace(CONFIG, scan_layers=scan, **extra), make_mesh(MeshConfig()), seed=0)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        fn = lambda p: per_token_logprobs(nnx.merge(graphdef, p, rest), tokens, jnp.ones_like(tokens, bool))[0].sum()
        loss, g = jax.jit(jax.value_and_grad(fn))(params)
        losses.append(float(loss)), grads.append(g)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bfloat16_params_and_compute(model):
    """bf16 storage and compute run and stay close to float32 (a smoke test of the dtype plumbing)."""
    config = dataclasses.replace(CONFIG, param_dtype="bfloat16", compute_dtype="bfloat16")
    bf16 = create_model(config, make_mesh(MeshConfig()), seed=0)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    tokens = jax.random.randint(jax.random.key(6), (2, 8), 0, CONFIG.vocab_size)
    mask = jnp.ones((2, 8), bool)
    logits, _ = bf16(tokens, positions_from_mask(mask), mask)
    assert logits.dtype == jnp.float32
    f32 = full_logits(model, tokens, mask)
    assert np.abs(np.asarray(logits) - f32).max() < 0.05 * np.abs(f32).max()


GEMMA_LIKE = dict(num_layers=3, sliding_window=5, layer_types=("sliding", "full", "sliding"), qk_norm=True,
                  norm_plus_one=True, sandwich_norms=True, embed_scale=True, attn_softcap=20.0, final_softcap=15.0,
                  query_pre_attn_scalar=8)


@pytest.mark.parametrize("extra", [dict(scan_layers=True), {}, dict(remat=True), GEMMA_LIKE],
                         ids=["scanned", "unrolled", "remat", "gemma-like"])
def test_rows_on_a_shared_prefix_equal_the_rows_written_out(extra):
    """Rows that continue shared prefixes (each prefix run once, its keys and values read per row)
    give the log-probs, entropies and gradients of the same rows with their prefix columns written out:
    left-padded prefixes of different lengths, rows in any order, a prefix no row uses, padded
    row ends, and an empty prefix row whose own first token has nothing before it."""
    config = dataclasses.replace(CONFIG, **extra)
    model = create_model(config, make_mesh(MeshConfig()), seed=0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    U, S, B, T = 4, 7, 6, 9
    prefix_tokens = jax.random.randint(jax.random.key(7), (U, S), 0, config.vocab_size)
    prefix_mask = jnp.ones((U, S), bool).at[1, :3].set(False).at[2, :6].set(False).at[3].set(False)
    of_row = jnp.array([2, 0, 1, 0, 3, 2])  # prefix 3 is all padding; rows 1 and 3 share prefix 0
    own = jax.random.randint(jax.random.key(8), (B, T), 0, config.vocab_size)
    own_mask = jnp.ones((B, T), bool).at[0, 5:].set(False).at[3, 2:].set(False)
    table_tokens = jnp.concatenate([prefix_tokens, prefix_tokens[1:2]])  # a fifth prefix no row continues
    table_mask = jnp.concatenate([prefix_mask, prefix_mask[1:2]])
    whole_tokens = jnp.concatenate([prefix_tokens[of_row], own], axis=1)
    whole_mask = jnp.concatenate([prefix_mask[of_row], own_mask], axis=1)
    weights = jax.random.normal(jax.random.key(9), (B, T - 1))

    def shared(p):  # the gradient flows through the rows and through the prefixes' keys and values
        m = nnx.merge(graphdef, p, rest)
        prefix = SharedPrefix(*m.prefix_kv(table_tokens, table_mask), table_mask, of_row)
        logp, ent = per_token_logprobs(m, own, own_mask, 0.9, chunk_tokens=16, start=1, prefix=prefix)
        return (logp * weights).sum() + ent.sum(), (logp, ent)

    def whole(p):
        logp, ent = per_token_logprobs(nnx.merge(graphdef, p, rest), whole_tokens, whole_mask, 0.9,
                                       chunk_tokens=16, start=S + 1)
        return (logp * weights).sum() + ent.sum(), (logp, ent)

    (loss_s, (logp_s, ent_s)), grads_s = jax.jit(jax.value_and_grad(shared, has_aux=True))(params)
    (loss_w, (logp_w, ent_w)), grads_w = jax.jit(jax.value_and_grad(whole, has_aux=True))(params)
    scored = np.asarray(own_mask[:, 1:])  # (right padding only: a real token always has a real one before it)
    assert (np.asarray(logp_w)[~scored] == 0).all() and (np.asarray(logp_w)[scored] < 0).all()
    np.testing.assert_allclose(np.asarray(logp_s), np.asarray(logp_w), atol=2e-5)
    np.testing.assert_allclose(np.asarray(ent_s), np.asarray(ent_w), atol=2e-5)
    assert float(loss_s) == pytest.approx(float(loss_w), rel=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads_s), jax.tree.leaves(grads_w)):
        scale = max(float(np.abs(np.asarray(b)).max()), 1e-3)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5 * scale, err_msg=jax.tree_util.keystr(path))
    # The prefixes matter (the test can tell): a row whose prefix is swapped gets other log-probs.
    swapped = SharedPrefix(*model.prefix_kv(table_tokens, table_mask), table_mask, of_row.at[1].set(1))
    logp_x, _ = per_token_logprobs(model, own, own_mask, 0.9, start=1, prefix=swapped)
    assert np.abs(np.asarray(logp_x)[1] - np.asarray(logp_s)[1]).max() > 1e-3
