"""One Flax NNX decoder for the Qwen2/Qwen2.5, Qwen3, Llama 3 and Gemma 3 (text) families.

The same forward serves training (full sequences with a padding mask and explicit positions) and
decoding (the same layers reading and writing a `KVCache`). Layers are stacked along a leading axis;
training runs them under `jax.lax.scan`, so its compile time does not grow with depth, and the cache
path unrolls them over per-layer slices taken once (`Decoder.blocks`), so no decode step copies a
layer out of the stack.

Shape letters: B batch, T new tokens, S cache slots, D model width, H query heads, K key/value
heads, N heads of either kind (rotary embedding), G = H / K query heads per KV head, Dh head width,
F MLP width, V vocabulary, L layers.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from r1zero.config import ModelConfig

_NEG_INF = -1e30  # finite, so a fully masked (padding) query row gives a harmless uniform softmax


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Keys and values of every layer for S slots; all rows write at the same slot `end`.

    k: one [B, K, Dh, S] array per layer, v: one [B, K, S, Dh] array per layer: the layouts whose
    decode-step products XLA:CPU runs fastest (keys stored [B, K, S, Dh] made q.k 2-6x slower).
    Separate buffers, not one stacked [L, ...] array: a decode step then updates each in place and
    attends over it directly, where slicing a layer out of a stacked cache copied it every step.
    valid_BxS: which slots hold a real (non-padding) token.
    end: int32 scalar, the next slot to write.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    valid: jax.Array
    end: jax.Array

    @classmethod
    def create(cls, config: ModelConfig, batch: int, slots: int, dtype=None) -> "KVCache":
        dtype = jnp.dtype(dtype or config.compute_dtype)
        K, Dh, L = config.num_kv_heads, config.head_dim, config.num_layers
        zeros = lambda shape: tuple(jnp.zeros(shape, dtype) for _ in range(L))
        return cls(k=zeros((batch, K, Dh, slots)), v=zeros((batch, K, slots, Dh)),
                   valid=jnp.zeros((batch, slots), bool), end=jnp.zeros((), jnp.int32))

    def map_rows(self, fn) -> "KVCache":
        """The same cache with `fn` applied along the row axis of every per-row array."""
        return KVCache(k=tuple(map(fn, self.k)), v=tuple(map(fn, self.v)), valid=fn(self.valid), end=self.end)


def rope_inv_freq(config: ModelConfig, local: bool = False) -> np.ndarray:
    """Inverse rotary frequencies [Dh/2], with Llama-3 scaling when configured (as transformers);
    `local`: those of sliding-window layers (their own base, never scaled)."""
    dim = config.head_dim
    theta = config.rope_local_theta if local else config.rope_theta
    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    s = None if local else config.rope_scaling
    if s is None:
        return inv_freq.astype(np.float32)
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x_BxTxNxDh: jax.Array, sin_BxTxHalf: jax.Array, cos_BxTxHalf: jax.Array) -> jax.Array:
    """Rotates the two halves of each head (the `rotate_half` convention of HF Qwen2/Llama)."""
    x1, x2 = jnp.split(x_BxTxNxDh.astype(jnp.float32), 2, axis=-1)
    sin, cos = sin_BxTxHalf[:, :, None, :], cos_BxTxHalf[:, :, None, :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxTxNxDh.dtype)


def rms_norm(x_BxTxD: jax.Array, scale_D: jax.Array, eps: float, plus_one: bool = False) -> jax.Array:
    """RMSNorm over the last axis, computed in float32 as transformers does. Llama/Qwen scale after
    casting back (w * x.to(dtype)); Gemma (`plus_one`) scales by (1 + w) first, ((1 + w) * x).to(dtype)."""
    x = x_BxTxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
    if plus_one:
        return (x * (1.0 + scale_D.astype(jnp.float32))).astype(x_BxTxD.dtype)
    return scale_D.astype(x_BxTxD.dtype) * x.astype(x_BxTxD.dtype)


def _param(rngs: nnx.Rngs, shape, axes, dtype, init: str = "normal") -> nnx.Param:
    if init == "normal":  # HF initializer_range 0.02
        value = 0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)
    elif init == "ones":
        value = jnp.ones(shape, jnp.float32)
    else:
        value = jnp.zeros(shape, jnp.float32)
    return nnx.Param(value.astype(dtype), axes=axes)


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        c, dt = config, jnp.dtype(config.param_dtype)
        D, H, K, Dh = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        self.config = config
        self.q = _param(rngs, (D, H, Dh), ("embed", "heads", "head_dim"), dt)
        self.k = _param(rngs, (D, K, Dh), ("embed", "kv_heads", "head_dim"), dt)
        self.v = _param(rngs, (D, K, Dh), ("embed", "kv_heads", "head_dim"), dt)
        self.o = _param(rngs, (H, Dh, D), ("heads", "head_dim", "embed"), dt)
        if c.qkv_bias:
            self.q_bias = _param(rngs, (H, Dh), ("heads", "head_dim"), dt, "zeros")
            self.k_bias = _param(rngs, (K, Dh), ("kv_heads", "head_dim"), dt, "zeros")
            self.v_bias = _param(rngs, (K, Dh), ("kv_heads", "head_dim"), dt, "zeros")
        if c.o_bias:
            self.o_bias = _param(rngs, (D,), ("norm",), dt, "zeros")
        if c.qk_norm:
            self.q_norm = _param(rngs, (Dh,), ("head_dim",), dt, _norm_init(c))
            self.k_norm = _param(rngs, (Dh,), ("head_dim",), dt, _norm_init(c))

    def __call__(self, x_BxTxD, sin, cos, mask_BxTxS, kv, end, prefill=False, kv_before=None):
        """Self-attention; with `kv` (this layer's cached (k, v)), writes the new keys and values at
        slot `end` and attends over all S slots (over the T new tokens only when `prefill`ing an
        empty cache) and returns the updated cache; else attends over the T new tokens, after the
        keys and values `kv_before` ([B, K, Dh, Sp], [B, K, Sp, Dh]: slots before the first token)
        when given, and returns its own (k [B, K, Dh, T], v [B, K, T, Dh])."""
        c, cdt = self.config, x_BxTxD.dtype
        q_BxTxHxDh = jnp.einsum("btd,dhk->bthk", x_BxTxD, self.q[...].astype(cdt))
        k_BxTxKxDh = jnp.einsum("btd,dhk->bthk", x_BxTxD, self.k[...].astype(cdt))
        v_BxTxKxDh = jnp.einsum("btd,dhk->bthk", x_BxTxD, self.v[...].astype(cdt))
        if c.qkv_bias:
            q_BxTxHxDh = q_BxTxHxDh + self.q_bias[...].astype(cdt)
            k_BxTxKxDh = k_BxTxKxDh + self.k_bias[...].astype(cdt)
            v_BxTxKxDh = v_BxTxKxDh + self.v_bias[...].astype(cdt)
        if c.qk_norm:
            q_BxTxHxDh = rms_norm(q_BxTxHxDh, self.q_norm[...], c.rms_norm_eps, c.norm_plus_one)
            k_BxTxKxDh = rms_norm(k_BxTxKxDh, self.k_norm[...], c.rms_norm_eps, c.norm_plus_one)
        q_BxTxHxDh = apply_rope(q_BxTxHxDh, sin, cos)
        k_BxKxDhxT = apply_rope(k_BxTxKxDh, sin, cos).transpose(0, 2, 3, 1)
        v_BxKxTxDh = v_BxTxKxDh.transpose(0, 2, 1, 3)
        keys_BxKxDhxS, values_BxKxSxDh = k_BxKxDhxT, v_BxKxTxDh
        if kv_before is not None:
            keys_BxKxDhxS = jnp.concatenate([kv_before[0].astype(cdt), k_BxKxDhxT], axis=3)
            values_BxKxSxDh = jnp.concatenate([kv_before[1].astype(cdt), v_BxKxTxDh], axis=2)
        if kv is None:
            kv = (k_BxKxDhxT, v_BxKxTxDh)
        else:
            k_BxKxDhxS, v_BxKxSxDh = kv
            write = lambda cache, new, at: jax.lax.dynamic_update_slice(cache, new.astype(cache.dtype), at)
            k_BxKxDhxS = write(k_BxKxDhxS, k_BxKxDhxT, (0, 0, 0, end))
            v_BxKxSxDh = write(v_BxKxSxDh, v_BxKxTxDh, (0, 0, end, 0))
            kv = (k_BxKxDhxS, v_BxKxSxDh)
            if not prefill:
                keys_BxKxDhxS, values_BxKxSxDh = k_BxKxDhxS.astype(cdt), v_BxKxSxDh.astype(cdt)
        scale = None if c.query_pre_attn_scalar is None else c.query_pre_attn_scalar**-0.5
        out_BxTxHxDh = _attend(q_BxTxHxDh, keys_BxKxDhxS, values_BxKxSxDh, mask_BxTxS, scale, c.attn_softcap)
        out_BxTxD = jnp.einsum("bthk,hkd->btd", out_BxTxHxDh, self.o[...].astype(cdt))
        if c.o_bias:
            out_BxTxD = out_BxTxD + self.o_bias[...].astype(cdt)
        return out_BxTxD, kv


def _attend(q_BxTxHxDh, k_BxKxDhxS, v_BxKxSxDh, mask_BxTxS, scale=None, softcap=None):
    """Grouped-query attention; scores and softmax in float32, scores times `scale` (None: divided
    by sqrt(Dh)), soft-capped when `softcap` is set. (Head axes stay ahead of T and Dh in the einsum
    outputs: XLA:CPU runs the other orders of these batched dots ~10x slower.)"""
    B, T, H, Dh = q_BxTxHxDh.shape
    K = k_BxKxDhxS.shape[1]
    q_BxKxGxTxDh = q_BxTxHxDh.reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
    scores_BxKxGxTxS = jnp.einsum(
        "bkgtd,bkds->bkgts", q_BxKxGxTxDh, k_BxKxDhxS, preferred_element_type=jnp.float32
    )
    scores_BxKxGxTxS = scores_BxKxGxTxS / math.sqrt(Dh) if scale is None else scores_BxKxGxTxS * scale
    if softcap is not None:
        scores_BxKxGxTxS = jnp.tanh(scores_BxKxGxTxS / softcap) * softcap
    scores_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], scores_BxKxGxTxS, _NEG_INF)
    probs = jax.nn.softmax(scores_BxKxGxTxS, axis=-1).astype(v_BxKxSxDh.dtype)
    out_BxKxGxTxDh = jnp.einsum("bkgts,bksd->bkgtd", probs, v_BxKxSxDh)
    return out_BxKxGxTxDh.transpose(0, 3, 1, 2, 4).reshape(B, T, H, Dh)


class MLP(nnx.Module):
    """Gated MLP: down(act(gate(x)) * up(x)); act is silu (SwiGLU) or tanh-approximated gelu (GeGLU)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        D, F, dt = config.hidden_size, config.intermediate_size, jnp.dtype(config.param_dtype)
        self.act = config.hidden_act
        self.gate = _param(rngs, (D, F), ("embed", "mlp"), dt)
        self.up = _param(rngs, (D, F), ("embed", "mlp"), dt)
        self.down = _param(rngs, (F, D), ("mlp", "embed"), dt)

    def __call__(self, x_BxTxD, feature_major: bool = False):
        """feature_major (training): the tokens flattened and the [F, N] intermediates kept feature-
        major, so the weight gradients contract over N the way XLA:CPU lays them out; [N, F]
        intermediates made it write each one transposed, element by element (a quarter of a training
        step). Decoding keeps [B, T, F]: the feature-major form made a decode step 30% slower."""
        cdt = x_BxTxD.dtype
        act = jax.nn.silu if self.act == "silu" else functools.partial(jax.nn.gelu, approximate=True)
        gate, up, down = (w[...].astype(cdt) for w in (self.gate, self.up, self.down))
        if not feature_major:
            return (act(x_BxTxD @ gate) * (x_BxTxD @ up)) @ down
        x_NxD = x_BxTxD.reshape(-1, x_BxTxD.shape[-1])
        h_FxN = act(jnp.einsum("nd,df->fn", x_NxD, gate)) * jnp.einsum("nd,df->fn", x_NxD, up)
        return jnp.einsum("fn,fd->nd", h_FxN, down).reshape(x_BxTxD.shape)


def _norm_init(config: ModelConfig) -> str:
    return "zeros" if config.norm_plus_one else "ones"  # either way the norm starts as the identity


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        dt, D, init = jnp.dtype(config.param_dtype), config.hidden_size, _norm_init(config)
        self.eps, self.plus_one, self.sandwich = config.rms_norm_eps, config.norm_plus_one, config.sandwich_norms
        self.attn_norm = _param(rngs, (D,), ("norm",), dt, init)
        self.attn = Attention(config, rngs)
        self.mlp_norm = _param(rngs, (D,), ("norm",), dt, init)
        self.mlp = MLP(config, rngs)
        if self.sandwich:
            self.attn_post_norm = _param(rngs, (D,), ("norm",), dt, init)
            self.mlp_post_norm = _param(rngs, (D,), ("norm",), dt, init)

    def __call__(self, x_BxTxD, sin, cos, mask_BxTxS, kv, end, prefill=False, kv_before=None):
        norm = lambda x, scale: rms_norm(x, scale[...], self.eps, self.plus_one)
        training = kv is None
        h_BxTxD, kv = self.attn(norm(x_BxTxD, self.attn_norm), sin, cos, mask_BxTxS, kv, end, prefill, kv_before)
        if self.sandwich:
            h_BxTxD = norm(h_BxTxD, self.attn_post_norm)
        x_BxTxD = x_BxTxD + h_BxTxD
        h_BxTxD = self.mlp(norm(x_BxTxD, self.mlp_norm), feature_major=training)
        if self.sandwich:
            h_BxTxD = norm(h_BxTxD, self.mlp_post_norm)
        return x_BxTxD + h_BxTxD, kv


class Decoder(nnx.Module):
    """Token embedding, L pre-norm blocks (stacked; scanned in training, unrolled when decoding),
    final norm, LM head (or tied)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        dt = jnp.dtype(config.param_dtype)
        self.config = config
        self.embed = _param(rngs, (config.vocab_size, config.hidden_size), ("vocab", "embed"), dt)

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: None, "axes": "layers"})
        def make_layers(rngs):
            return Block(config, rngs)

        self.layers = make_layers(rngs)
        self.final_norm = _param(rngs, (config.hidden_size,), ("norm",), dt, _norm_init(config))
        if not config.tie_embeddings:
            self.lm_head = _param(rngs, (config.hidden_size, config.vocab_size), ("embed", "vocab"), dt)

    def __call__(self, tokens_BxT, positions_BxT, mask_BxT, cache: KVCache | None = None):
        """Logits [B, T, V] (float32) and the updated cache (None without one)."""
        h_BxTxD, cache = self.hidden_states(tokens_BxT, positions_BxT, mask_BxT, cache)
        return self.logits(h_BxTxD), cache

    def hidden_states(self, tokens_BxT, positions_BxT, mask_BxT, cache: KVCache | None = None,
                      blocks: list["Block"] | None = None, prefill: bool = False,
                      prefix: "SharedPrefix | None" = None):
        """Final-norm hidden states [B, T, D] for T new tokens, and the updated cache.

        tokens_BxT: int32 ids; positions_BxT: rotary positions; mask_BxT: True for real tokens.
        Without a cache, token t attends to tokens <= t that are real, and first to the real tokens
        of its row's `prefix` when one is given (training on rows that share a prompt: each prompt's
        keys and values are computed once, `prefix_kv`, and read by every row that continues it;
        positions_BxT then continue the prefix's: `prefix.continued_positions(mask_BxT)`).
        With a cache, the T tokens are written at slots [end, end + T) and attend to every earlier
        real slot and to themselves; `prefill` says the cache is empty (end = 0), so attention covers the T tokens,
        not all S slots; `blocks` (from `self.blocks()`) saves slicing the stacked layers again.
        """
        c = self.config
        T = tokens_BxT.shape[1]
        x_BxTxD = self._embed(tokens_BxT)
        mask_BxT = mask_BxT.astype(bool)
        if prefix is not None:
            if cache is not None:
                raise ValueError("a shared prefix is for training (no cache)")
            return self._hidden_with_prefix(x_BxTxD, positions_BxT, mask_BxT, prefix), None
        if cache is None or prefill:
            end, valid_BxS = 0, mask_BxT
        else:
            end = cache.end
            valid_BxS = jax.lax.dynamic_update_slice(cache.valid, mask_BxT, (0, end))
        full, local = self._attention_inputs(positions_BxT, end, valid_BxS)
        sliding_L = c.sliding_layers

        if cache is None:  # training and scoring: every token at once, no cache
            def layer(block, x, sliding, _):
                (sin, cos), mask = _pick(sliding, full, local)
                return block(x, sin, cos, mask, None, end)[0], None

            x_BxTxD = self._scan_layers(layer, x_BxTxD)[0]
        else:  # decoding: the same blocks unrolled, one cache buffer each (see KVCache)
            k, v = list(cache.k), list(cache.v)
            for i, block in enumerate(blocks or self.blocks()):
                (sin, cos), mask = local if sliding_L[i] else full
                x_BxTxD, (k[i], v[i]) = block(x_BxTxD, sin, cos, mask, (k[i], v[i]), end, prefill)
            if prefill:
                valid_BxS = jax.lax.dynamic_update_slice(cache.valid, mask_BxT, (0, 0))
            cache = KVCache(k=tuple(k), v=tuple(v), valid=valid_BxS, end=cache.end + T)
        return self._final_norm(x_BxTxD), cache

    def prefix_kv(self, tokens_UxS, mask_UxS) -> tuple[jax.Array, jax.Array]:
        """Keys [L, U, K, Dh, S] and values [L, U, K, S, Dh] of every layer for U prefixes (left
        padding allowed): what rows that continue them attend to (`SharedPrefix`)."""
        mask_UxS = mask_UxS.astype(bool)
        full, local = self._attention_inputs(positions_from_mask(mask_UxS), 0, mask_UxS)

        def layer(block, x, sliding, _):
            (sin, cos), mask = _pick(sliding, full, local)
            return block(x, sin, cos, mask, None, 0)  # (x, this layer's (k, v))

        return self._scan_layers(layer, self._embed(tokens_UxS))[1]

    def _hidden_with_prefix(self, x_BxTxD, positions_BxT, mask_BxT, prefix: "SharedPrefix"):
        """Rows that continue shared prefixes: in every layer, row b's tokens attend to the keys and
        values of prefix `of_row[b]` (taken per row: the gradient sums over the rows that share it)
        and then to their own. The numbers of the rows with their prefixes written out (up to float
        rounding), without running a prefix once per row."""
        S = prefix.mask.shape[1]
        # A row's own tokens sit at slots [S, S + T), after its prefix's S slots.
        valid_BxS = jnp.concatenate([jnp.take(prefix.mask.astype(bool), prefix.of_row, axis=0), mask_BxT], axis=1)
        full, local = self._attention_inputs(positions_BxT, S, valid_BxS)

        def layer(block, x, sliding, kv):
            (sin, cos), mask = _pick(sliding, full, local)
            per_row = tuple(jnp.take(a, prefix.of_row, axis=0) for a in kv)
            return block(x, sin, cos, mask, None, 0, kv_before=per_row)[0], None

        return self._final_norm(self._scan_layers(layer, x_BxTxD, (prefix.k, prefix.v))[0])

    def _embed(self, tokens_BxT):
        c = self.config
        x_BxTxD = jnp.take(self.embed[...], tokens_BxT, axis=0)
        if c.embed_scale:  # in the embedding's dtype, as transformers
            x_BxTxD = x_BxTxD * jnp.asarray(math.sqrt(c.hidden_size), x_BxTxD.dtype)
        return x_BxTxD.astype(jnp.dtype(c.compute_dtype))

    def _final_norm(self, x_BxTxD):
        return rms_norm(x_BxTxD, self.final_norm[...], self.config.rms_norm_eps, self.config.norm_plus_one)

    def _attention_inputs(self, positions_BxT, end, valid_BxS):
        """((sin, cos), mask_BxTxS) of T queries at slots [end, end + T) over the S slots `valid_BxS`
        for full-attention layers, and the same for sliding-window layers (None without any)."""
        c = self.config
        T = positions_BxT.shape[1]
        query_slot_T = end + jnp.arange(T)
        slot_S = jnp.arange(valid_BxS.shape[1])
        causal_TxS = slot_S[None, :] <= query_slot_T[:, None]
        mask_BxTxS = causal_TxS[None] & valid_BxS[:, None, :]
        full = (_rope(positions_BxT, rope_inv_freq(c)), mask_BxTxS)
        if not any(c.sliding_layers):
            return full, None
        # a row's tokens fill consecutive slots: slot distance = position distance
        window_TxS = query_slot_T[:, None] - slot_S[None, :] < c.sliding_window
        return full, (_rope(positions_BxT, rope_inv_freq(c, local=True)), mask_BxTxS & window_TxS[None])

    def _scan_layers(self, layer, x, xs=None):
        """(x after every layer, the layers' outputs stacked) for `layer(block, x, sliding, xs_l) ->
        (x, out)` (sliding: None without sliding-window layers, else a traced bool; xs_l: layer l's
        slice of `xs`), under `scan` (compile time independent of depth) or unrolled (XLA schedules
        across layers: faster steps, compile time grows with depth); remat when configured."""
        c = self.config
        graphdef, layer_state = nnx.split(self.layers)

        def body(x, inputs):
            state, sliding, xs_l = inputs
            return layer(nnx.merge(graphdef, state), x, sliding, xs_l)

        if c.remat:
            body = jax.checkpoint(body)
        sliding = jnp.asarray(c.sliding_layers) if any(c.sliding_layers) else None
        if c.scan_layers:
            return jax.lax.scan(body, x, (layer_state, sliding, xs))
        outs = []
        for i in range(c.num_layers):
            x, out = body(x, jax.tree.map(lambda a: a[i], (layer_state, sliding, xs)))
            outs.append(out)
        return x, jax.tree.map(lambda *a: jnp.stack(a), *outs)

    def blocks(self) -> list[Block]:
        """The stacked layers as L separate blocks (slices of the stacked parameters). Inside a jitted
        decode loop, slice them once before the loop and pass the list (see `sampler`), so that no
        step copies a layer's weights out of the stack."""
        graphdef, layer_state = nnx.split(self.layers)
        return [nnx.merge(graphdef, jax.tree.map(lambda x: x[i], layer_state)) for i in range(self.config.num_layers)]

    def logits(self, h_xD: jax.Array) -> jax.Array:
        """float32 logits [..., V] of hidden states [..., D] (soft-capped when the model says so)."""
        w_DxV = self.embed[...].T if self.config.tie_embeddings else self.lm_head[...]
        z = jnp.einsum("...d,dv->...v", h_xD, w_DxV.astype(h_xD.dtype), preferred_element_type=jnp.float32)
        cap = self.config.final_softcap
        return z if cap is None else jnp.tanh(z / cap) * cap


def _pick(sliding, full, local):
    """`full` without sliding-window layers (sliding None), else `local` where the traced `sliding`."""
    if sliding is None:
        return full
    return jax.tree.map(lambda a, b: jnp.where(sliding, b, a), full, local)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SharedPrefix:
    """The first columns of rows that share them (a GRPO group's prompt), computed once.

    k [L, U, K, Dh, S], v [L, U, K, S, Dh]: every layer's keys and values of U prefixes
    (`Decoder.prefix_kv`); mask [U, S]: their real tokens (left padding allowed); of_row [B]: the
    prefix each of the B rows continues. Row b stands for prefix[of_row[b]] followed by the row's own
    tokens, at the positions that follow the prefix's (`continued_positions`)."""

    k: jax.Array
    v: jax.Array
    mask: jax.Array
    of_row: jax.Array

    def continued_positions(self, mask_BxT: jax.Array) -> jax.Array:
        """Rotary positions of the rows' own tokens: those of the whole row (`positions_from_mask`
        of prefix + own columns), without writing the prefix out."""
        before_B = jnp.take(self.mask.astype(jnp.int32).sum(1), self.of_row)
        return jnp.maximum(before_B[:, None] + jnp.cumsum(mask_BxT.astype(jnp.int32), axis=1) - 1, 0)


def _rope(positions_BxT: jax.Array, inv_freq_Half: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """(sin, cos) [B, T, Dh/2] of the rotary angles at `positions`."""
    angles_BxTxHalf = positions_BxT[..., None].astype(jnp.float32) * jnp.asarray(inv_freq_Half)
    return jnp.sin(angles_BxTxHalf), jnp.cos(angles_BxTxHalf)


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
    """Rotary positions that count only real tokens (0 for the first real token of each row), so a
    left-padded row gets the same positions as the unpadded sequence."""
    return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=1) - 1, 0)


def param_count(state) -> int:
    """Number of parameters in a (possibly abstract) model state."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
