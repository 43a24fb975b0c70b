"""Next-token pretraining of a small base model on the procedural corpus (r1zero/data/corpus.py).

This is how the main job's base model is made: plain language modelling on "web text" about
multiplication, never on the RL prompt with rewards and never on SFT data. The run writes

    DIR/model/        a Hugging Face directory (config.json, model.safetensors, tokenizer.json,
                      generation_config.json) + pretrain.json: the config, seed and evaluation loss
    DIR/metrics.jsonl one row per step (loss, learning rate), evaluation loss every eval_every steps
    DIR/config.json   the PretrainConfig

Every batch is a pure function of (seed, step), so the same config gives the same model.

Shape letters: B rows of a batch, T tokens per row (seq_len).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from r1zero import sharding
from r1zero.config import PretrainConfig, to_dict
from r1zero.errors import MissingFileError, UserError
from r1zero.data import corpus
from r1zero.metrics import MetricWriter
from r1zero.models import create_model, hf, param_count, per_token_logprobs
from r1zero.optim import init_opt_state, jit_update, make_optimizer
from r1zero.sharding import process_rows, rows_to_global
from r1zero.tokenizer import SPECIAL_TOKENS, Tokenizer, write_char_tokenizer

EVAL_STREAM = 2**31 - 1  # the evaluation batch's random stream: default_rng([seed, EVAL_STREAM])


def batch(config: PretrainConfig, tok: Tokenizer, rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens_BxT, mask_BxT) of packed corpus documents drawn from `rng` (B = `rows`)."""
    docs = (tok.encode(d["text"]) for d in corpus.documents(config.corpus, rng))
    return corpus.pack(docs, rows, config.seq_len, tok.eos_ids[0], tok.pad_id)


def eval_batch(config: PretrainConfig, tok: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The fixed evaluation batch: its own stream of the seed, so no training batch equals it."""
    return batch(config, tok, np.random.default_rng([config.seed, EVAL_STREAM]), config.eval_rows)


def lm_loss(model, tokens_BxT, mask_BxT, chunk_tokens: int = 8192) -> jax.Array:
    """Mean next-token cross-entropy (nats) over every token that has a real token before it."""
    logp_BxT, _ = per_token_logprobs(model, tokens_BxT, mask_BxT, 1.0, chunk_tokens)
    scored_BxT = mask_BxT[:, 1:] & mask_BxT[:, :-1]
    return -logp_BxT.sum() / jnp.maximum(scored_BxT.sum(), 1)


_lm_loss = jax.jit(lm_loss, static_argnames="chunk_tokens")


def corpus_loss(model, tok: Tokenizer, config: PretrainConfig) -> float:
    """The loss of `model` on the config's evaluation batch (what pretrain.json records)."""
    tokens, mask = eval_batch(config, tok)
    return float(_lm_loss(model, tokens, mask, chunk_tokens=config.logprob_chunk_tokens))


def initial_model(config: PretrainConfig, tokenizer_dir: Path, mesh):
    """`config.init_dir`'s model, once its tokenizer is checked to be the corpus's own (the same
    ids for the same characters): continued pretraining must not silently remap tokens."""
    init = Path(config.init_dir)
    theirs = init / "tokenizer.json"
    if not theirs.is_file():
        raise MissingFileError(f"init_dir {init} has no tokenizer.json (it must be a model `r1zero pretrain` wrote)")
    vocab = lambda path: json.loads(path.read_text()).get("model", {}).get("vocab")
    if vocab(theirs) != vocab(tokenizer_dir / "tokenizer.json"):
        raise UserError(f"init_dir {init}: its tokenizer.json is not the corpus's character tokenizer "
                        f"(continued pretraining needs the same token ids)")
    model, _ = hf.load_model(init, mesh, given=config.model)
    return model


def pretrain(config: PretrainConfig, workdir: str | Path, progress: bool = True,
             command: str = "") -> dict[str, Any]:
    """Trains from a random init (or `config.init_dir`) for `config.steps` steps and writes DIR/model; returns the summary."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(to_dict(config), indent=1) + "\n")
    mesh = sharding.make_mesh(config.mesh)
    tok = write_char_tokenizer(workdir / "tokenizer", corpus.ALPHABET, SPECIAL_TOKENS)
    if config.init_dir:
        model = initial_model(config, workdir / "tokenizer", mesh)
    else:
        model_config = dataclasses.replace(config.model, vocab_size=tok.vocab_size)
        hf.hf_config_dict(model_config)  # a model Hugging Face cannot hold fails now, not after training
        model = create_model(model_config, mesh, seed=config.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(config.optim, config.steps)
    opt_state, opt_sh = init_opt_state(tx, params, mesh)

    def loss_fn(params, rows):
        return lm_loss(nnx.merge(graphdef, params, rest), rows["tokens"], rows["mask"], config.logprob_chunk_tokens)

    def step(params, opt_state, rows):
        loss, grads = jax.value_and_grad(loss_fn)(params, rows)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    train_step, eval_loss = jit_update(step, params, opt_sh, mesh), jax.jit(loss_fn)
    # Every host generates the whole batch from (seed, step) and places its own share of the rows.
    put = lambda tokens_BxT, mask_BxT: rows_to_global({"tokens": process_rows(tokens_BxT), "mask": process_rows(mask_BxT)},
                                                     mesh)
    held_out = put(*eval_batch(config, tok))
    writer = MetricWriter(workdir)
    from tqdm import tqdm

    bar = tqdm(total=config.steps, desc="pretrain", unit="step", disable=not progress, dynamic_ncols=True)
    t_start, seen_tokens, last = time.perf_counter(), 0, {}
    try:
        for step in range(1, config.steps + 1):
            tokens, mask = batch(config, tok, np.random.default_rng([config.seed, step]), config.batch_size)
            params, opt_state, stats = train_step(params, opt_state, put(tokens, mask))
            seen_tokens += int(mask.sum())
            row = {"loss": float(stats["loss"]), "grad_norm": float(stats["grad_norm"]), "tokens": seen_tokens,
                   "seconds": time.perf_counter() - t_start}
            if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
                row["eval/loss"] = float(eval_loss(params, held_out))
            writer.write(step, row)
            last = row
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
    finally:
        bar.close()
        writer.close()
    final = nnx.merge(graphdef, params, rest)
    out = hf.save_model(final, workdir / "model", tokenizer_dir=workdir / "tokenizer")
    summary = {"command": command, "config": to_dict(config), "steps": config.steps, "seed": config.seed,
               "eval_loss": last["eval/loss"], "final_train_loss": last["loss"], "tokens": seen_tokens,
               "seconds": round(last["seconds"], 1), "params": param_count(params), "jax": jax.__version__,
               "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}"}
    (out / "pretrain.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
