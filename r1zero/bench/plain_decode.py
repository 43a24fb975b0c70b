"""A plain JAX KV-cache decode loop: the floor the sampler must clear (not used by r1zero itself).

The textbook JAX decode loop (the kind of probe that measured ~46k generated tok/s for a
Qwen2.5-0.5B shape on an H200), written against r1zero's own parameters so both decode the same
weights: one stacked cache [L, B, K, S, Dh] for keys and one for values, `lax.scan` over the stacked
layers, `jax.random.categorical` over the full vocabulary (or argmax), everything in one jitted
fori_loop, no stop conditions. Unlike the probe, all rows share one position (one cache write per
layer instead of a per-row one). It decodes from a cache already filled up to `start` (prefill is not
its business): the benchmark compares decode steps only.

RMSNorm and RoPE are written out again on purpose, as in the probe: this loop is a baseline, kept
independent of `r1zero.models.decoder` except for the rotary frequencies.

Shape letters as in `r1zero.models.decoder`; N decode steps.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from r1zero.models.decoder import Decoder, rope_inv_freq


def stacked_params(model: Decoder) -> dict:
    """The model's parameters as plain arrays in its compute dtype ([L, ...] for the layers)."""
    c, st = model.config, nnx.state(model)
    L, D, H, K, Dh = c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    attn, mlp, layers = st["layers"]["attn"], st["layers"]["mlp"], st["layers"]
    optional = lambda module, name, shape: module[name][...].reshape(shape) if name in module else jnp.zeros(shape)
    p = dict(
        emb=st["embed"][...], final_norm=st["final_norm"][...],
        wq=attn["q"][...].reshape(L, D, H * Dh), wk=attn["k"][...].reshape(L, D, K * Dh),
        wv=attn["v"][...].reshape(L, D, K * Dh), wo=attn["o"][...].reshape(L, H * Dh, D),
        bq=optional(attn, "q_bias", (L, H * Dh)), bk=optional(attn, "k_bias", (L, K * Dh)),
        bv=optional(attn, "v_bias", (L, K * Dh)), bo=optional(attn, "o_bias", (L, D)),
        wg=mlp["gate"][...], wu=mlp["up"][...], wd=mlp["down"][...],
        n1=layers["attn_norm"][...], n2=layers["mlp_norm"][...],
    )
    p["lm_head"] = p["emb"].T if c.tie_embeddings else st["lm_head"][...]
    return jax.tree.map(lambda x: x.astype(c.compute_dtype), p)


def make_decode(model: Decoder, batch: int, slots: int, steps: int, greedy: bool = False):
    """decode(params, (tok_B, pos_B, k_LxBxKxSxDh, v_LxBxKxSxDh, key)) -> tokens_BxN: the `steps`
    tokens after `tok_B`, which sits at position `pos_B` (equal for all rows; not yet cached)."""
    c = model.config
    B, S, H, K, Dh, eps = batch, slots, c.num_heads, c.num_kv_heads, c.head_dim, c.rms_norm_eps
    G = H // K
    inv_freq_Half = rope_inv_freq(c)

    def rms(x_BxD, w_D):
        x = x_BxD.astype(jnp.float32)
        return (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + eps)).astype(x_BxD.dtype) * w_D

    def rope(x_BxNxDh, pos_B):
        angle = pos_B[:, None].astype(jnp.float32) * inv_freq_Half[None, :]
        cos, sin = jnp.cos(angle)[:, None, :], jnp.sin(angle)[:, None, :]
        x1, x2 = jnp.split(x_BxNxDh.astype(jnp.float32), 2, -1)
        return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BxNxDh.dtype)

    def layer(pos_B, x_BxD, lp):
        wq, wk, wv, bq, bk, bv, wo, bo, wg, wu, wd, n1, n2, k_BxKxSxDh, v_BxKxSxDh = lp
        h_BxD = rms(x_BxD, n1)
        q_BxHxDh = rope((h_BxD @ wq + bq).reshape(B, H, Dh), pos_B)
        k_BxKxDh = rope((h_BxD @ wk + bk).reshape(B, K, Dh), pos_B)
        v_BxKxDh = (h_BxD @ wv + bv).reshape(B, K, Dh)
        at = (0, 0, pos_B[0], 0)
        k_BxKxSxDh = jax.lax.dynamic_update_slice(k_BxKxSxDh, k_BxKxDh[:, :, None].astype(k_BxKxSxDh.dtype), at)
        v_BxKxSxDh = jax.lax.dynamic_update_slice(v_BxKxSxDh, v_BxKxDh[:, :, None].astype(v_BxKxSxDh.dtype), at)
        scores_BxKxGxS = jnp.einsum("bkgd,bksd->bkgs", q_BxHxDh.reshape(B, K, G, Dh), k_BxKxSxDh,
                                    preferred_element_type=jnp.float32) / math.sqrt(Dh)
        scores_BxKxGxS = jnp.where((jnp.arange(S) <= pos_B[0])[None, None, None], scores_BxKxGxS, -1e30)
        probs = jax.nn.softmax(scores_BxKxGxS, -1).astype(x_BxD.dtype)
        o_BxKxGxDh = jnp.einsum("bkgs,bksd->bkgd", probs, v_BxKxSxDh.astype(x_BxD.dtype))
        x_BxD = x_BxD + o_BxKxGxDh.reshape(B, H * Dh) @ wo + bo
        h_BxD = rms(x_BxD, n2)
        return x_BxD + (jax.nn.silu(h_BxD @ wg) * (h_BxD @ wu)) @ wd, (k_BxKxSxDh, v_BxKxSxDh)

    names = ["wq", "wk", "wv", "bq", "bk", "bv", "wo", "bo", "wg", "wu", "wd", "n1", "n2"]

    def step(p, i, carry):
        tok_B, pos_B, k_cache, v_cache, key, out_BxN = carry
        x_BxD = p["emb"][tok_B]
        x_BxD, (k_cache, v_cache) = jax.lax.scan(
            lambda x, lp: layer(pos_B, x, lp), x_BxD, tuple(p[n] for n in names) + (k_cache, v_cache)
        )
        logits_BxV = jnp.einsum("bd,dv->bv", rms(x_BxD, p["final_norm"]), p["lm_head"],
                                preferred_element_type=jnp.float32)
        key, sub = jax.random.split(key)
        tok_B = (jnp.argmax(logits_BxV, -1) if greedy else jax.random.categorical(sub, logits_BxV)).astype(jnp.int32)
        return tok_B, pos_B + 1, k_cache, v_cache, key, out_BxN.at[:, i].set(tok_B)

    def decode(p, carry):
        carry = (*carry, jnp.zeros((B, steps), jnp.int32))
        return jax.lax.fori_loop(0, steps, lambda i, cr: step(p, i, cr), carry)[-1]

    return jax.jit(decode)


def start_carry(model: Decoder, batch: int, slots: int, start: int, tok_B=None, dtype=None, seed: int = 1):
    """A carry at position `start` whose cache holds random keys/values in every slot (as the
    probe's; the mask hides slots from `start` on until they are written)."""
    c = model.config
    shape = (c.num_layers, batch, c.num_kv_heads, slots, c.head_dim)
    k = (0.1 * jax.random.normal(jax.random.key(seed), shape, jnp.float32)).astype(dtype or c.compute_dtype)
    tok_B = jnp.zeros((batch,), jnp.int32) if tok_B is None else jnp.asarray(tok_B, jnp.int32)
    return tok_B, jnp.full((batch,), start, jnp.int32), k, 0.5 * k, jax.random.key(seed + 1)
