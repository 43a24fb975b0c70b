"""A plain JAX KV-cache decode loop: the floor the sampler must clear (not used by r1zero itself).

The loop of `../shared/bench/jax_decode_probe.py` (which measured the ~46k tok/s quoted in the
rollout issue on an H200), written against r1zero's own parameters so both decode the same
weights: one stacked cache [L, B, K, S, Dh] per keys and values, `lax.scan` over the stacked layers,
`jax.random.categorical` over the full vocabulary (or argmax), everything in one jitted fori_loop,
no stop conditions. It decodes from a cache that is already filled up to `start` (prefill is not
its business): the benchmark compares decode steps only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from r1zero.models.decoder import Decoder, rope_inv_freq


def stacked_params(model: Decoder) -> dict:
    """The model's parameters as plain stacked arrays ([L, ...] for the layers)."""
    c, st = model.config, nnx.state(model)
    L, D, H, K, Dh = c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    attn, mlp, layers = st["layers"]["attn"], st["layers"]["mlp"], st["layers"]
    p = dict(
        emb=st["embed"][...], final_norm=st["final_norm"][...],
        wq=attn["q"][...].reshape(L, D, H * Dh), wk=attn["k"][...].reshape(L, D, K * Dh),
        wv=attn["v"][...].reshape(L, D, K * Dh), wo=attn["o"][...].reshape(L, H * Dh, D),
        wg=mlp["gate"][...], wu=mlp["up"][...], wd=mlp["down"][...],
        n1=layers["attn_norm"][...], n2=layers["mlp_norm"][...],
    )
    zeros = lambda n: jnp.zeros((L, n), p["wq"].dtype)
    p["bq"] = attn["q_bias"][...].reshape(L, H * Dh) if c.qkv_bias else zeros(H * Dh)
    p["bk"] = attn["k_bias"][...].reshape(L, K * Dh) if c.qkv_bias else zeros(K * Dh)
    p["bv"] = attn["v_bias"][...].reshape(L, K * Dh) if c.qkv_bias else zeros(K * Dh)
    p["lm_head"] = p["emb"].T if c.tie_embeddings else st["lm_head"][...]
    return p


def make_decode(model: Decoder, batch: int, slots: int, steps: int, greedy: bool = False):
    """decode(params, (tok_B, pos_B, k_LxBxKxSxDh, v_LxBxKxSxDh, key)) -> (tok, pos, k, v, key,
    out_BxN, steps): `tok_B` is the token at position `pos_B` (not yet in the cache); out_BxN holds
    the `steps` tokens that follow it. The cache argument is donated."""
    c = model.config
    B, S, H, K, Dh, eps = batch, slots, c.num_heads, c.num_kv_heads, c.head_dim, c.rms_norm_eps
    G = H // K
    inv_freq = rope_inv_freq(c)

    def rms(x, w):
        x32 = x.astype(jnp.float32)
        return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + eps)).astype(x.dtype) * w

    def rope(x, pos):
        angle = pos[:, None].astype(jnp.float32) * inv_freq[None, :]
        cos, sin = jnp.cos(angle)[:, None, :], jnp.sin(angle)[:, None, :]
        x1, x2 = jnp.split(x.astype(jnp.float32), 2, -1)
        return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)

    def step(p, carry):
        tok, pos, kc, vc, key, out, i = carry
        x = p["emb"][tok]

        def layer(x, lp):
            wq, wk, wv, bq, bk, bv, wo, wg, wu, wd, n1, n2, kl, vl = lp
            h = rms(x, n1)
            q = rope((h @ wq + bq).reshape(B, H, Dh), pos)
            k = rope((h @ wk + bk).reshape(B, K, Dh), pos)
            v = (h @ wv + bv).reshape(B, K, Dh)
            kl = jax.lax.dynamic_update_slice(kl, k[:, :, None].astype(kl.dtype), (0, 0, pos[0], 0))
            vl = jax.lax.dynamic_update_slice(vl, v[:, :, None].astype(vl.dtype), (0, 0, pos[0], 0))
            att = jnp.einsum("bkgd,bksd->bkgs", q.reshape(B, K, G, Dh), kl,
                             preferred_element_type=jnp.float32) / math.sqrt(Dh)
            att = jnp.where((jnp.arange(S) <= pos[0])[None, None, None], att, -1e30)
            o = jnp.einsum("bkgs,bksd->bkgd", jax.nn.softmax(att, -1).astype(x.dtype), vl)
            x = x + o.reshape(B, H * Dh) @ wo
            h = rms(x, n2)
            return x + (jax.nn.silu(h @ wg) * (h @ wu)) @ wd, (kl, vl)

        names = ["wq", "wk", "wv", "bq", "bk", "bv", "wo", "wg", "wu", "wd", "n1", "n2"]
        x, (kc, vc) = jax.lax.scan(layer, x, tuple(p[n] for n in names) + (kc, vc))
        logits = (rms(x, p["final_norm"]) @ p["lm_head"]).astype(jnp.float32)
        key, sub = jax.random.split(key)
        tok = jnp.argmax(logits, -1) if greedy else jax.random.categorical(sub, logits)
        tok = tok.astype(jnp.int32)
        return tok, pos + 1, kc, vc, key, out.at[:, i].set(tok), i + 1

    def decode(p, carry):
        tok, pos, kc, vc, key = carry
        init = (tok, pos, kc, vc, key, jnp.zeros((B, steps), jnp.int32), jnp.zeros((), jnp.int32))
        return jax.lax.fori_loop(0, steps, lambda _, cr: step(p, cr), init)

    return jax.jit(decode, donate_argnums=(1,))


def start_carry(model: Decoder, batch: int, slots: int, start: int, tok_B=None, seed: int = 1):
    """A carry whose cache holds random keys/values in slots [0, start) (as the probe does)."""
    c = model.config
    dtype = jnp.dtype(c.compute_dtype)
    shape = (c.num_layers, batch, c.num_kv_heads, slots, c.head_dim)
    k = (0.1 * jax.random.normal(jax.random.key(seed), shape, jnp.float32)).astype(dtype)
    tok = jnp.zeros((batch,), jnp.int32) if tok_B is None else jnp.asarray(tok_B, jnp.int32)
    return tok, jnp.full((batch,), start, jnp.int32), k, 0.5 * k, jax.random.key(seed + 1)
