"""The rollout sampler: G completions per prompt from the same NNX model the trainer updates.

Prefill the unique prompts once, copy each prompt's KV cache to its G rows, then decode inside
`jax.lax.while_loop` until every row has finished (EOS, a stop string, or `max_new_tokens`). Budgets
of 64 new tokens or more decode in phases of doubling length (`phase_ends`): a phase's cache has only
the slots it can reach, so a step attends over the filled part of the cache, not the whole budget,
and when at most half of the rows are still running the next phase decodes only those, in a
smaller batch (finished rows stop costing anything). Each phase is one jitted program that updates
the KV cache in place (the state is donated from phase to phase, never copied to the host).

Log-probabilities of sampled tokens are those of `per_token_logprobs(..., temperature)`: the full
softmax of logits / temperature, whatever top-p/top-k did to the sampling distribution.

Shape letters: P unique prompts, G samples each, B = P * G rows (group-major: row r is sample r % G of
prompt r // G), Lp prompt bucket, N max_new_tokens, V vocabulary, C candidate tokens (V, or top-k),
J blocks of Q candidates (the two-level draw), W longest token in bytes, M longest stop string in
bytes minus one, Z = M + W bytes in the stop-string window, E positions a stop string can end at.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from r1zero.config import SamplingConfig
from r1zero.errors import UserError
from r1zero.models.decoder import Decoder, KVCache, positions_from_mask
from r1zero.sharding import constrain_rows, rows_to_global, rows_to_local, state_shardings
from r1zero.tokenizer import Tokenizer

RUNNING, EOS, STOP, LENGTH = 0, 1, 2, 3
FINISH_REASONS = {EOS: "eos", STOP: "stop", LENGTH: "length"}
MAX_TOKEN_BYTES = 256  # longer tokens are matched against stop strings by their first 256 bytes


@dataclasses.dataclass
class Samples:
    """A batch of completions (numpy, on the host), rows group-major.

    prompt_tokens_BxLp / prompt_mask_BxLp: left-padded prompt ids of each row.
    completion_tokens_BxN / completion_mask_BxN: generated ids (pad after the end) and which count;
    a completion ends with its EOS token or with the token that completed a stop string.
    logprobs_BxN: log p(token) under softmax(logits / temperature) (logits / 1 when greedy); 0 on padding.
    finish_reason: per row, "eos", "stop" or "length". group_ids_B: the prompt index of each row.
    texts: decoded completions (without a final EOS token; stop text kept).
    decode_steps: iterations of the decode loop (= the longest completion it sampled).
    prompt_truncated_B: the row's prompt was cut from the left because it exceeded max_prompt_len.
    """

    prompt_tokens: np.ndarray
    prompt_mask: np.ndarray
    completion_tokens: np.ndarray
    completion_mask: np.ndarray
    logprobs: np.ndarray
    finish_reason: list[str]
    group_ids: np.ndarray
    texts: list[str]
    decode_steps: int
    prompt_truncated: np.ndarray

    @property
    def num_truncated_prompts(self) -> int:
        return len(set(self.group_ids[self.prompt_truncated].tolist()))

    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens_BxT, mask_BxT): prompt and completion side by side, as the trainer scores them;
        `per_token_logprobs(...)[:, Lp:]` reproduces `logprobs`."""
        tokens = np.concatenate([self.prompt_tokens, self.completion_tokens], axis=1)
        return tokens, np.concatenate([self.prompt_mask, self.completion_mask], axis=1)

    def take(self, rows: np.ndarray) -> Samples:
        """The rows at indices `rows` (whole groups, group-major), groups numbered from 0 in order."""
        ids_B = self.group_ids[rows]
        pick = lambda xs: [xs[i] for i in rows] if xs else []
        return dataclasses.replace(
            self, prompt_tokens=self.prompt_tokens[rows], prompt_mask=self.prompt_mask[rows],
            completion_tokens=self.completion_tokens[rows], completion_mask=self.completion_mask[rows],
            logprobs=self.logprobs[rows], finish_reason=pick(self.finish_reason), texts=pick(self.texts),
            group_ids=np.cumsum(np.r_[True, ids_B[1:] != ids_B[:-1]]) - 1,  # a group's rows are adjacent
            prompt_truncated=self.prompt_truncated[rows])

    @staticmethod
    def concat(parts: Sequence[Samples]) -> Samples:
        """The rows of several batches one after another (same max_new_tokens), prompts left-padded
        to the widest bucket among them; group ids continue from one batch to the next."""
        Lp = max(s.prompt_tokens.shape[1] for s in parts)
        left_pad = lambda x: np.pad(x, ((0, 0), (Lp - x.shape[1], 0)))
        joined = lambda name: np.concatenate([getattr(s, name) for s in parts])
        offsets = np.cumsum([0] + [int(s.group_ids.max()) + 1 for s in parts[:-1]])
        return Samples(
            prompt_tokens=np.concatenate([left_pad(s.prompt_tokens) for s in parts]),
            prompt_mask=np.concatenate([left_pad(s.prompt_mask) for s in parts]),
            completion_tokens=joined("completion_tokens"), completion_mask=joined("completion_mask"),
            logprobs=joined("logprobs"), finish_reason=sum((s.finish_reason for s in parts), []),
            group_ids=np.concatenate([s.group_ids + o for s, o in zip(parts, offsets)]),
            texts=sum((s.texts for s in parts), []), decode_steps=max(s.decode_steps for s in parts),
            prompt_truncated=joined("prompt_truncated"))


# ---------------------------------------------------------------------------------------------------
# Choosing one token per row (pure).


def sample_tokens(logits_BxV, u_B, temperature: float, top_k: int = 0, top_p: float = 1.0):
    """(token_B, logp_B): a token per row and its log-prob under softmax(logits / temperature).

    temperature 0 takes the argmax (log-prob at temperature 1). Otherwise top-k and then top-p
    restrict the candidates, and the row's uniform draw u in [0, 1) picks a candidate by inverse
    CDF (`_inverse_cdf`): one random number per row instead of a Gumbel draw over the whole
    vocabulary, and exact.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    if temperature == 0:
        z_BxV = logits_BxV
        token_B = jnp.argmax(z_BxV, axis=-1)
    else:
        z_BxV = logits_BxV / temperature
        cand_BxC, index_BxC = _candidates(z_BxV, top_k, top_p)
        pick_B = _inverse_cdf(cand_BxC, 1.0 - u_B)  # 1 - u in (0, 1]: never a zero-mass candidate
        token_B = pick_B if index_BxC is None else jnp.take_along_axis(index_BxC, pick_B[:, None], -1)[:, 0]
    logp_B = jnp.take_along_axis(z_BxV, token_B[:, None], -1)[:, 0] - jax.nn.logsumexp(z_BxV, axis=-1)
    return token_B.astype(jnp.int32), logp_B


def _inverse_cdf(z_BxC, q_B):
    """Per row, the first index whose cumulative softmax(z) mass reaches q in (0, 1].

    Two levels, so that no cumulative sum runs over the whole vocabulary (XLA's cumsum over 152k
    logits cost ~10 ms per step at batch 16 on CPU): the mass of each of J blocks of Q ~ sqrt(C)
    entries, the block where q falls, then the entry inside that block (3-4x faster, same tokens).
    """
    B, C = z_BxC.shape
    Q = min(C, 2 ** math.ceil(math.log2(math.sqrt(C))))
    J = -(-C // Q)
    w_BxC = jnp.exp(z_BxC - z_BxC.max(-1, keepdims=True))
    w_BxJxQ = jnp.pad(w_BxC, ((0, 0), (0, J * Q - C))).reshape(B, J, Q)
    mass_BxJ = w_BxJxQ.sum(-1)
    cdf_BxJ = jnp.cumsum(mass_BxJ, axis=-1)
    target_B = q_B * cdf_BxJ[:, -1]
    block_B = jnp.minimum(jnp.sum(cdf_BxJ < target_B[:, None], axis=-1), J - 1)
    before_B = jnp.take_along_axis(cdf_BxJ - mass_BxJ, block_B[:, None], -1)[:, 0]
    inside_BxQ = jnp.take_along_axis(w_BxJxQ, block_B[:, None, None], 1)[:, 0]
    offset_B = jnp.sum(jnp.cumsum(inside_BxQ, axis=-1) < (target_B - before_B)[:, None], axis=-1)
    offset_B = jnp.minimum(offset_B, Q - 1)  # rounding at the block's end: stay in the block
    return jnp.minimum(block_B * Q + offset_B, C - 1)  # and out of the padding


def _candidates(z_BxV, top_k: int, top_p: float):
    """(values_BxC, vocab_index_BxC or None): the scaled logits still allowed, -inf elsewhere."""
    if top_k <= 0 and top_p >= 1.0:
        return z_BxV, None
    k = top_k if top_k > 0 else z_BxV.shape[-1]
    values_BxC, index_BxC = jax.lax.top_k(z_BxV, k)  # sorted, largest first
    if top_p < 1.0:
        p_BxC = jax.nn.softmax(values_BxC, axis=-1)
        mass_before_BxC = jnp.cumsum(p_BxC, axis=-1) - p_BxC
        values_BxC = jnp.where(mass_before_BxC < top_p, values_BxC, -jnp.inf)  # keeps the top token
    return values_BxC, index_BxC


# ---------------------------------------------------------------------------------------------------
# Stop strings, matched on device on the bytes each token stands for.


@functools.lru_cache(maxsize=8)
def _token_byte_table(tokenizer: Tokenizer, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(bytes_VxW int16, -1 padded; length_V) for ids up to the model's vocabulary size."""
    pieces = tokenizer.token_bytes()[:vocab_size]
    width = max(1, min(MAX_TOKEN_BYTES, max((len(p) for p in pieces), default=1)))
    table = np.full((vocab_size, width), -1, np.int16)
    length = np.zeros((vocab_size,), np.int32)
    for i, piece in enumerate(pieces):
        piece = piece[:width]
        table[i, : len(piece)] = np.frombuffer(piece, np.uint8)
        length[i] = len(piece)
    return table, length


def _stop_hit(buf_BxM, token_B, table_VxW, length_V, stops: tuple[bytes, ...]):
    """(hit_B, new_buf_BxM): whether a stop string ends inside this token's bytes, given the last M
    bytes generated before it; spans over several tokens and ends inside a token both count."""
    M = buf_BxM.shape[1]
    new_BxW, n_B = table_VxW[token_B].astype(jnp.int32), length_V[token_B]
    window_BxZ = jnp.concatenate([buf_BxM, new_BxW], axis=1)
    Z = window_BxZ.shape[1]
    hit_B = jnp.zeros(token_B.shape, bool)
    for stop in stops:  # static: a few strings, unrolled
        m = len(stop)
        starts = Z - m + 1
        match_BxE = jnp.ones((token_B.shape[0], starts), bool)
        for j, byte in enumerate(stop):
            match_BxE &= window_BxZ[:, j : j + starts] == byte
        end_E = jnp.arange(starts) + m - 1
        in_token_BxE = (end_E[None] >= M) & (end_E[None] < M + n_B[:, None])
        hit_B |= jnp.any(match_BxE & in_token_BxE, axis=1)
    # Keep the last M bytes: window[n : n + M] for each row.
    take_BxM = n_B[:, None] + jnp.arange(M)[None]
    return hit_B, jnp.take_along_axis(window_BxZ, take_BxM, axis=1)


# ---------------------------------------------------------------------------------------------------
# The jitted programs: one over the whole cache, or one per decode phase.


MIN_PHASE = 32  # decoding in phases: the first covers this many new tokens at least


def phase_ends(max_new_tokens: int) -> list[int]:
    """New-token counts at which decode phases end: halving down from the budget while a phase keeps
    at least MIN_PHASE tokens (64 -> [32, 64], 256 -> [32, 64, 128, 256], under 64: one phase). Phase
    k's KV cache has only prompt + ends[k] slots, so early steps attend over a short cache; between
    phases the finished rows can be dropped (`sample`)."""
    ends = [max_new_tokens]
    while ends[0] // 2 >= MIN_PHASE:
        ends.insert(0, ends[0] // 2)
    return ends


def _start(model: Decoder, blocks, prompt_PxL, prompt_mask_PxL, key, slots: int, config: SamplingConfig,
           stops: tuple[bytes, ...], pad_id: int, mesh):
    """The decode state after prefilling the P unique prompts once and giving each of its G rows a
    copy of the cache (`slots` slots). Rows are tracked by `rows_b`, their index in the full batch of
    B = P * G, so a state can later hold fewer rows (see `_compact`); the outputs stay [B, N]."""
    P, Lp = prompt_PxL.shape
    G, N = config.num_samples, config.max_new_tokens
    B = P * G
    prompt_PxL, prompt_mask_PxL = constrain_rows(prompt_PxL, mesh), constrain_rows(prompt_mask_PxL, mesh)
    cache = KVCache.create(model.config, P, slots, config.cache_dtype)
    h_PxLxD, cache = model.hidden_states(
        prompt_PxL, positions_from_mask(prompt_mask_PxL), prompt_mask_PxL, cache, blocks, prefill=True
    )
    repeat = lambda x, axis=0: constrain_rows(jnp.repeat(x, G, axis=axis), mesh, axis)
    # One key per row, from (prompt index, sample index), so a row's draws do not depend on the
    # batch; every uniform draw a row may need, made before the loop (no RNG inside a step).
    row_keys_B = jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(key, r // G), r % G))(jnp.arange(B))
    if config.temperature == 0:
        u_NxB = jnp.zeros((N, B), jnp.float32)
    else:
        u_NxB = jax.vmap(lambda k: jax.random.uniform(k, (N,)), out_axes=1)(row_keys_B)
    M = max([len(s) for s in stops], default=1) - 1
    return dict(
        i=jnp.zeros((), jnp.int32), cache=cache.map_rows(repeat), logits=repeat(model.logits(h_PxLxD[:, -1]), 0),
        first_position=repeat(prompt_mask_PxL.sum(axis=1), 0), rows=jnp.arange(B, dtype=jnp.int32),
        reason=jnp.full((B,), RUNNING, jnp.int32), buf=jnp.full((B, max(M, 1)), -1, jnp.int32), u=u_NxB,
        out_reason=jnp.full((B,), RUNNING, jnp.int32), out_tokens=jnp.full((B, N), pad_id, jnp.int32),
        out_logp=jnp.zeros((B, N), jnp.float32), out_mask=jnp.zeros((B, N), bool),
    )


def _decode(model: Decoder, blocks, s: dict, end, byte_table_VxW, byte_length_V, *, config: SamplingConfig,
            eos_ids: tuple[int, ...], stops: tuple[bytes, ...], pad_id: int) -> dict:
    """Decode steps until `end` new tokens or until every row of the state has finished. Row b of
    the state is row rows_b of the batch: it reads that row's draws and writes that row's outputs
    (a row index past the batch is a padding row, written nowhere)."""
    eos_E = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)
    rows_b = s["rows"]

    def body(s):
        i = s["i"]
        u_b = s["u"][i].at[rows_b].get(mode="fill", fill_value=0.0)
        token_b, logp_b = sample_tokens(s["logits"], u_b, config.temperature, config.top_k, config.top_p)
        active_b = s["reason"] == RUNNING
        token_b = jnp.where(active_b, token_b, pad_id)
        is_eos_b = active_b & jnp.isin(token_b, eos_E)
        reason_b = jnp.where(is_eos_b, EOS, s["reason"])
        buf_bxM = s["buf"]
        if stops:
            hit_b, buf_bxM = _stop_hit(buf_bxM, token_b, byte_table_VxW, byte_length_V, stops)
            reason_b = jnp.where(active_b & hit_b & ~is_eos_b, STOP, reason_b)
        h_bx1xD, cache = model.hidden_states(
            token_b[:, None], (s["first_position"] + i)[:, None], active_b[:, None], s["cache"], blocks
        )
        put = lambda out, value: out.at[rows_b, i].set(value, mode="drop")
        return dict(
            s, i=i + 1, cache=cache, logits=model.logits(h_bx1xD[:, 0]), reason=reason_b, buf=buf_bxM,
            out_reason=s["out_reason"].at[rows_b].set(reason_b, mode="drop"),
            out_tokens=put(s["out_tokens"], token_b), out_logp=put(s["out_logp"], jnp.where(active_b, logp_b, 0.0)),
            out_mask=put(s["out_mask"], active_b),
        )

    def running(s):
        return (s["i"] < end) & jnp.any(s["reason"] == RUNNING)

    return jax.lax.while_loop(running, body, s)


def _finish(s: dict):
    """(tokens_BxN, mask_BxN, logp_BxN, reason_B, decode_steps)."""
    reason_B = jnp.where(s["out_reason"] == RUNNING, LENGTH, s["out_reason"])
    return s["out_tokens"], s["out_mask"], s["out_logp"], reason_B, s["i"]


_STATIC = ("graphdef", "config", "eos_ids", "stops", "pad_id", "mesh")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _generate(graphdef, state, prompt_PxL, prompt_mask_PxL, key, byte_table_VxW, byte_length_V, *,
              config: SamplingConfig, eos_ids: tuple[int, ...], stops: tuple[bytes, ...], pad_id: int, mesh=None):
    """(tokens_BxN, mask_BxN, logp_BxN, reason_B, decode_steps) for left-padded prompts, in one
    program over the whole cache (one decode phase). With a `mesh`, prompts and KV cache rows are
    split over (data, fsdp) where they divide, so devices decode different rows (data-parallel
    sampling) instead of all of them."""
    model: Decoder = nnx.merge(graphdef, state)
    blocks = model.blocks()  # slice the stacked layers once, outside the loop (XLA would copy every slice every step)
    s = _start(model, blocks, prompt_PxL, prompt_mask_PxL, key, prompt_PxL.shape[1] + config.max_new_tokens,
               config, stops, pad_id, mesh)
    s = _decode(model, blocks, s, config.max_new_tokens, byte_table_VxW, byte_length_V, config=config,
                eos_ids=eos_ids, stops=stops, pad_id=pad_id)
    return _finish(s)


@functools.partial(jax.jit, static_argnames=("graphdef", "config", "slots", "stops", "pad_id", "mesh"))
def _start_phases(graphdef, state, prompt_PxL, prompt_mask_PxL, key, *, config: SamplingConfig, slots: int,
                  stops: tuple[bytes, ...], pad_id: int, mesh=None):
    model: Decoder = nnx.merge(graphdef, state)
    return _start(model, model.blocks(), prompt_PxL, prompt_mask_PxL, key, slots, config, stops, pad_id, mesh)


@functools.partial(jax.jit, static_argnames=_STATIC + ("end", "slots"), donate_argnames="s")
def _phase(graphdef, state, s, byte_table_VxW, byte_length_V, *, end: int, slots: int, config: SamplingConfig,
           eos_ids: tuple[int, ...], stops: tuple[bytes, ...], pad_id: int, mesh=None):
    """(state, live rows): the cache grown to `slots` slots, then decoded up to `end` new tokens."""
    model: Decoder = nnx.merge(graphdef, state)
    grow = slots - s["cache"].valid.shape[1]
    if grow:  # k is [b, K, Dh, S], v [b, K, S, Dh], valid [b, S]: new empty slots at the end
        pad = lambda x, axis: jnp.pad(x, [(0, grow if a == axis else 0) for a in range(x.ndim)])
        c = s["cache"]
        s = dict(s, cache=KVCache(k=tuple(pad(k, 3) for k in c.k), v=tuple(pad(v, 2) for v in c.v),
                                  valid=pad(c.valid, 1), end=c.end))
    s = _decode(model, model.blocks(), s, end, byte_table_VxW, byte_length_V, config=config, eos_ids=eos_ids,
                stops=stops, pad_id=pad_id)
    return s, jnp.sum(s["reason"] == RUNNING)


@functools.partial(jax.jit, static_argnames=("rows", "mesh"), donate_argnames="s")
def _compact(s: dict, *, rows: int, mesh=None) -> dict:
    """The state's running rows moved into a state of `rows` rows (at least as many as are running),
    in their order; the places left over are padding rows (finished, written nowhere)."""
    B = s["out_reason"].shape[0]
    running_b = s["reason"] == RUNNING
    keep_r = jnp.argsort(~running_b, stable=True)[:rows]
    real_r = running_b[keep_r]
    take = lambda x: constrain_rows(jnp.take(x, keep_r, axis=0), mesh)
    return dict(
        s, cache=s["cache"].map_rows(take), logits=take(s["logits"]), first_position=take(s["first_position"]),
        buf=take(s["buf"]), rows=jnp.where(real_r, take(s["rows"]), B), reason=jnp.where(real_r, RUNNING, LENGTH),
    )


def _decode_in_phases(graphdef, state, prompt_PxL, prompt_mask_PxL, key, table, length, *, config: SamplingConfig,
                      eos_ids, stops, pad_id, mesh):
    """`_generate`'s outputs, decoded phase by phase (`phase_ends`): each phase's cache holds only
    the slots it can reach, and when at most half of a phase's rows are still running the next
    phase decodes only those, in the smallest power-of-two fraction of the batch that holds them.
    Same tokens as one phase: every row reads its own draws, and no row's numbers depend on the
    others' (up to matmul rounding at a different batch size)."""
    Lp, ends = prompt_PxL.shape[1], phase_ends(config.max_new_tokens)
    static = dict(config=config, eos_ids=eos_ids, stops=stops, pad_id=pad_id, mesh=mesh)
    s = _start_phases(graphdef, state, prompt_PxL, prompt_mask_PxL, key, config=config, slots=Lp + ends[0],
                      stops=stops, pad_id=pad_id, mesh=mesh)
    with warnings.catch_warnings():  # growing the cache or dropping rows cannot reuse every donated buffer
        warnings.filterwarnings("ignore", "Some donated buffers were not usable")
        for end in ends:
            s, live = _phase(graphdef, state, s, table, length, end=end, slots=Lp + end, **static)
            live, rows = int(live), s["rows"].shape[0]
            if live == 0 or end == ends[-1]:  # nothing left to decode
                break
            while rows % 2 == 0 and rows // 2 >= live:
                rows //= 2
            if rows < s["rows"].shape[0]:
                s = _compact(s, rows=rows, mesh=mesh)
    return _finish(s)


# ---------------------------------------------------------------------------------------------------
# The host-side entry point.


def bucket(length: int, smallest: int, largest: int) -> int:
    """The padded size of `length`: the next power-of-two multiple of `smallest`, at most `largest`
    (padding to a few sizes keeps the number of compiled programs small)."""
    size = smallest
    while size < length:
        size *= 2
    return min(size, largest)


def prompt_bucket(length: int, config: SamplingConfig) -> int:
    """Padded prompt length: the next power of two from `min_prompt_bucket`, at most max_prompt_len."""
    return bucket(length, config.min_prompt_bucket, config.max_prompt_len)


def sample(model: Decoder, prompts: Sequence[str | Sequence[int]], key: jax.Array, config: SamplingConfig,
           tokenizer: Tokenizer | None, mesh=None) -> Samples:
    """G = config.num_samples completions for each prompt (text, or token ids).

    Over-long prompts raise a UserError naming the prompt and both lengths, unless
    `config.truncate_prompts` cuts them from the left (counted in `num_truncated_prompts`).
    Same key and inputs, same output. Without a tokenizer (benchmarks), prompts are token ids,
    EOS ids come from the config only, there are no stop strings and `texts` is empty.
    On several processes each passes its own prompts (same count everywhere) and `mesh`; the rows
    come back for this process's prompts, sampled with keys of their global prompt index.
    """
    if tokenizer is None and config.stop_strings:
        raise ValueError("stop strings need a tokenizer")
    pad_id = tokenizer.pad_id if tokenizer is not None else 0
    ids, truncated_P = _prompt_ids(prompts, config, tokenizer)
    longest = max(map(len, ids))
    if jax.process_count() > 1:  # every process must compile the same program
        from jax.experimental import multihost_utils

        longest = int(multihost_utils.process_allgather(np.asarray([longest])).max())
    P, G, Lp = len(ids), config.num_samples, prompt_bucket(longest, config)
    prompt_PxL = np.full((P, Lp), pad_id, np.int32)
    mask_PxL = np.zeros((P, Lp), bool)
    for p, row in enumerate(ids):  # left padding: every row's next token goes to the same slot
        prompt_PxL[p, Lp - len(row):], mask_PxL[p, Lp - len(row):] = row, True
    if config.eos_ids is not None:
        eos_ids = tuple(config.eos_ids)
    else:
        eos_ids = tokenizer.eos_ids if tokenizer is not None else ()
    stops = tuple(s.encode("utf-8") for s in config.stop_strings)
    if any(not s for s in stops):
        raise UserError("stop strings must not be empty")
    if stops:
        table, length = _token_byte_table(tokenizer, model.config.vocab_size)
    else:  # no stop strings: the tables are not read
        table, length = np.zeros((1, 1), np.int16), np.zeros((1,), np.int32)
    graphdef, state = nnx.split(model)
    layout = config.param_layout
    if layout == "auto":  # measured (README): no FSDP gather per token is faster wherever fsdp > 1
        mesh_now = _mesh_of(state)
        layout = "tensor" if mesh_now is not None and mesh_now.shape["fsdp"] > 1 else "train"
    if layout != "train":
        state = _relayout(state, layout)
    mesh = mesh or _mesh_of(state)
    phased = config.decode_phases and len(phase_ends(config.max_new_tokens)) > 1
    generate = _decode_in_phases if phased else _generate
    *per_row, steps = generate(graphdef, state, *rows_to_global((prompt_PxL, mask_PxL), mesh), key, table, length,
                               config=config, eos_ids=eos_ids, stops=stops, pad_id=pad_id, mesh=mesh)
    tokens, mask, logp, reason = rows_to_local(tuple(per_row), mesh)
    reasons = [FINISH_REASONS[int(r)] for r in reason]
    texts = []
    for row, m, why in zip(tokens, mask, reasons) if tokenizer is not None else ():
        kept = row[m]
        texts.append(tokenizer.decode(kept[:-1] if why == "eos" else kept))
    return Samples(
        prompt_tokens=np.repeat(prompt_PxL, G, axis=0), prompt_mask=np.repeat(mask_PxL, G, axis=0),
        completion_tokens=tokens, completion_mask=mask, logprobs=logp, finish_reason=reasons,
        group_ids=np.repeat(np.arange(P), G), texts=texts, decode_steps=int(steps),
        prompt_truncated=np.repeat(truncated_P, G),
    )


def _mesh_of(state):
    placement = getattr(jax.tree.leaves(state)[0], "sharding", None)
    return getattr(placement, "mesh", None)


def _relayout(state, layout: str):
    """The same parameters in the decoding layout: a jitted device-to-device reshard, no host copy."""
    mesh = jax.tree.leaves(state)[0].sharding.mesh
    target = state_shardings(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state), mesh, layout)
    return jax.device_put(state, target)


def _prompt_ids(prompts, config: SamplingConfig, tokenizer: Tokenizer | None) -> tuple[list[list[int]], np.ndarray]:
    """(token ids of each prompt, truncated_P: which were cut from the left to max_prompt_len)."""
    if not len(prompts):
        raise UserError("no prompts to sample from")
    ids, truncated_P = [], np.zeros(len(prompts), bool)
    for i, p in enumerate(prompts):
        if isinstance(p, str) and tokenizer is None:
            raise ValueError("text prompts need a tokenizer")
        row = tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p]
        if not row:
            raise UserError(f"prompt {i} is empty")
        if len(row) > config.max_prompt_len:
            if not config.truncate_prompts:
                raise UserError(
                    f"prompt {i} has {len(row)} tokens, more than max_prompt_len={config.max_prompt_len} "
                    f"(set truncate_prompts to cut it from the left)"
                )
            row, truncated_P[i] = row[-config.max_prompt_len:], True
        ids.append(row)
    return ids, truncated_P
