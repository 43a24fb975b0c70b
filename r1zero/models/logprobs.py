"""Per-token log-probabilities and entropies: the one definition the sampler and the trainer share.

log p(token_t | tokens_<t) under the full softmax of logits / temperature. Logits are never
materialised for more than `chunk_tokens` positions: a longer time axis is cut into chunks, each
chunk's float32 logits are reduced to (log-prob, entropy) and dropped, and the chunk is recomputed
in the backward pass (`jax.checkpoint`), so temporary memory is O(B * chunk * V), not O(B * T * V).

Shape letters: B rows, T tokens, D model width, V vocabulary, U chunks of C positions each
(U * C >= T: the time axis padded to whole chunks).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from r1zero.errors import UserError
from r1zero.models.decoder import Decoder, SharedPrefix, positions_from_mask
from r1zero.sharding import constrain_rows


def per_token_logprobs(
    model: Decoder,
    tokens_BxT: jax.Array,
    mask_BxT: jax.Array,
    temperature: float = 1.0,
    chunk_tokens: int = 4096,
    positions_BxT: jax.Array | None = None,
    start: int = 0,
    prefix: SharedPrefix | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(logp_BxW, entropy_BxW), float32, for the W = T - start columns from `start` on.

    logp[:, t] = log softmax(logits_{t-1} / temperature)[tokens[:, t]]; entropy[:, t] is the entropy
    of that same distribution. Both are 0 where token t is padding and where it has no real token
    before it (column 0, or the first real token of a left-padded row). `start` (static): the
    columns before it get no logits at all (the trainer passes the prompt length: only completion
    tokens are trained on).
    chunk_tokens: about how many (row, position) pairs get logits at once (memory B*chunk*V*4 bytes).
    prefix: the rows continue these shared prefixes (`SharedPrefix`: each runs once, see
    `Decoder.hidden_states`); the columns are the rows' own, after the prefix. Column 0 then has
    the prefix before it but gets no log-prob either: start at 1 or later.
    """
    if not temperature > 0:
        raise UserError(f"temperature must be > 0 for log-probabilities, got {temperature}")
    T = tokens_BxT.shape[1]
    if not 0 <= start < T:
        raise ValueError(f"start {start} outside the {T} columns")
    if prefix is not None and start < 1:
        raise ValueError("with a shared prefix, column 0 (after the prefix) gets no log-prob: start at 1 or later")
    mask_BxT = mask_BxT.astype(bool)
    if positions_BxT is None:
        positions_BxT = positions_from_mask(mask_BxT) if prefix is None else prefix.continued_positions(mask_BxT)
    h_BxTxD, _ = model.hidden_states(tokens_BxT, positions_BxT, mask_BxT, prefix=prefix)
    first = max(start, 1)  # column 0 has nothing before it
    logp_BxW1, ent_BxW1 = logprobs_from_hidden(
        model, h_BxTxD[:, first - 1 : -1], tokens_BxT[:, first:], temperature, chunk_tokens
    )
    scored_BxW1 = mask_BxT[:, first:] & mask_BxT[:, first - 1 : -1]
    pad = jnp.zeros((logp_BxW1.shape[0], first - start), logp_BxW1.dtype)
    logp_BxW = jnp.concatenate([pad, jnp.where(scored_BxW1, logp_BxW1, 0.0)], axis=1)
    ent_BxW = jnp.concatenate([pad, jnp.where(scored_BxW1, ent_BxW1, 0.0)], axis=1)
    return logp_BxW, ent_BxW


def logprobs_from_hidden(
    model: Decoder, h_BxTxD: jax.Array, targets_BxT: jax.Array, temperature: float, chunk_tokens: int
) -> tuple[jax.Array, jax.Array]:
    """Log-prob of targets[:, t] and entropy under softmax(logits(h[:, t]) / temperature), chunked
    over time; chunks keep the whole batch so a batch-sharded input stays sharded. Within one chunk
    there is nothing to save: its logits are kept for the backward pass, not recomputed."""
    B, T, D = h_BxTxD.shape
    if T == 0:  # a one-token sequence has nothing to score
        return jnp.zeros((B, 0), jnp.float32), jnp.zeros((B, 0), jnp.float32)
    U = -(-T // max(1, min(T, chunk_tokens // B)))
    C = -(-T // U)  # U chunks as even as they go: at most U - 1 padded positions

    def one_chunk(args):
        h_BxCxD, t_BxC = args
        z_BxCxV = model.logits(h_BxCxD) / temperature
        lse_BxC = jax.nn.logsumexp(z_BxCxV, axis=-1)
        logp_BxC = jnp.take_along_axis(z_BxCxV, t_BxC[..., None], axis=-1)[..., 0] - lse_BxC
        p_BxCxV = jnp.exp(z_BxCxV - lse_BxC[..., None])
        ent_BxC = lse_BxC - jnp.sum(p_BxCxV * z_BxCxV, axis=-1)
        return logp_BxC, ent_BxC

    if U == 1:
        return one_chunk((h_BxTxD, targets_BxT))
    h_UxBxCxD = jnp.pad(h_BxTxD, ((0, 0), (0, U * C - T), (0, 0))).reshape(B, U, C, D).transpose(1, 0, 2, 3)
    t_UxBxC = jnp.pad(targets_BxT, ((0, 0), (0, U * C - T))).reshape(B, U, C).transpose(1, 0, 2)
    # Recompute each chunk's logits in the backward pass instead of storing them all.
    logp_UxBxC, ent_UxBxC = jax.lax.map(jax.checkpoint(one_chunk), (h_UxBxCxD, t_UxBxC))
    unchunk = lambda a_UxBxC: a_UxBxC.transpose(1, 0, 2).reshape(B, U * C)[:, :T]
    return unchunk(logp_UxBxC), unchunk(ent_UxBxC)


def logprob_pass(graphdef: nnx.GraphDef, rest: Any, mesh, temperature: float = 1.0,
                 chunk_tokens: int = 4096) -> Callable:
    """jit(params, tokens_BxT, mask_BxT, start=0, prefix=None) -> logp_BxW (the columns from `start`
    on) for a model split into (graphdef, params, rest): the trainer's reference and recomputed old
    log-probs. Place the rows with `sharding.rows_to_global`; the log-probs come back split over
    (data, fsdp) the same way. prefix: the rows continue these shared prefixes (a `SharedPrefix` of
    the keys and values `fn.prefix_kv(params, tokens_UxS, mask_UxS)`, computed once for many calls)."""

    @functools.partial(jax.jit, static_argnames="start")
    def fn(params, tokens_BxT, mask_BxT, start=0, prefix=None):
        model = nnx.merge(graphdef, params, rest)
        logp_BxW, _ = per_token_logprobs(model, tokens_BxT, mask_BxT, temperature, chunk_tokens, start=start,
                                         prefix=prefix)
        return constrain_rows(logp_BxW, mesh)

    @jax.jit
    def prefix_kv(params, tokens_UxS, mask_UxS):
        model = nnx.merge(graphdef, params, rest)
        return model.prefix_kv(constrain_rows(tokens_UxS, mesh), constrain_rows(mask_UxS, mesh))

    fn.prefix_kv = prefix_kv
    return fn
