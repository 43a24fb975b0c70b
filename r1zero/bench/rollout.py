"""Rollout throughput: r1zero's sampler vs transformers' `generate`, side by side in one run.

    python -m r1zero.bench.rollout                          # tiny Qwen2-shaped model, CPU
    python -m r1zero.bench.rollout --size 0.5b --batch 16 64 256 --prompt-len 128 --new-tokens 256
    python -m r1zero.bench.rollout --batch 64 --group 8      # GRPO-shaped: 8 prompts x 8 samples

Both decode the same random Qwen2-architecture weights (r1zero creates them, exports a HF
directory, transformers loads it), the same prompts, exactly `--new-tokens` tokens per row (no EOS),
temperature 1 sampling over the full vocabulary. Decode steps alone are also put side by side with
a plain JAX loop over the same weights (`plain_decode`, the floor the sampler must clear; r1zero's
step time is (time for N new tokens - time for 1) / (N - 1)). With `--group G` each batch is B/G
prompts with G samples each, as a GRPO rollout: r1zero prefills each prompt once, transformers'
`generate` takes `num_return_sequences=G`. Prints a table and JSON lines (appended to
$OUT/rollout.jsonl when OUT is set). Needs only jax, flax (and its optax), transformers and torch
(no grain/tfds, no orbax), so it runs from a source tree with PYTHONPATH=. on a GPU machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import jax
import numpy as np
from flax import nnx

from r1zero import sampler
from r1zero.bench import plain_decode
from r1zero.config import MeshConfig, ModelConfig, SamplingConfig
from r1zero.models import create_model, hf
from r1zero.sharding import make_mesh

SIZES = {
    "tiny": ModelConfig(architecture="qwen2", vocab_size=2048, hidden_size=256, intermediate_size=768,
                        num_layers=4, num_heads=8, num_kv_heads=2, head_dim=32, qkv_bias=True,
                        tie_embeddings=True, rope_theta=1e6),
    "0.5b": ModelConfig(architecture="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                        num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1e6,
                        qkv_bias=True, tie_embeddings=True),
    "1.5b": ModelConfig(architecture="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                        num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128, rope_theta=1e6,
                        qkv_bias=True, tie_embeddings=True),
}


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "rollout.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")


def time_r1zero(model, prompts, config: SamplingConfig, repeats: int) -> tuple[float, float]:
    """(best seconds over `repeats` calls, seconds of the first call, which compiles)."""
    t0 = time.perf_counter()
    out = sampler.sample(model, prompts, jax.random.key(0), config, None)
    compile_s = time.perf_counter() - t0
    assert out.completion_mask.all(), "every row must generate exactly new_tokens"
    best = float("inf")
    for i in range(repeats):
        t0 = time.perf_counter()
        sampler.sample(model, prompts, jax.random.key(i + 1), config, None)
        best = min(best, time.perf_counter() - t0)
    return best, compile_s


def time_plain_decode(model, rows: int, start: int, steps: int, repeats: int) -> float:
    """Best seconds for the plain JAX loop to decode `steps` tokens for `rows` rows from `start`."""
    decode = plain_decode.make_decode(model, rows, start + steps, steps)
    params = plain_decode.stacked_params(model)
    jax.block_until_ready(decode(params, plain_decode.start_carry(model, rows, start + steps, start)))  # compiles
    best = float("inf")
    for i in range(repeats):
        carry = jax.block_until_ready(plain_decode.start_carry(model, rows, start + steps, start, seed=i + 2))
        t0 = time.perf_counter()
        jax.block_until_ready(decode(params, carry))
        best = min(best, time.perf_counter() - t0)
    return best


def decode_steps(model, prompts, config: SamplingConfig, full_s: float, repeats: int) -> dict:
    """ms per decode step of r1zero, (time for N new tokens - time for 1) / (N - 1), and of the
    plain JAX loop decoding as many rows from a cache filled up to the prompt bucket."""
    one_s, _ = time_r1zero(model, prompts, dataclasses.replace(config, max_new_tokens=1), repeats)
    N, Lp = config.max_new_tokens, sampler.prompt_bucket(len(prompts[0]), config)
    ours_ms = round(1e3 * (full_s - one_s) / (N - 1), 3)
    plain_ms = round(1e3 * time_plain_decode(model, len(prompts) * config.num_samples, Lp, N, repeats) / N, 3)
    ratio = round(plain_ms / ours_ms, 2) if ours_ms > 0 else float("nan")  # <= 0: timing noise at tiny N
    return {"r1zero_decode_ms_step": ours_ms, "plain_jax_decode_ms_step": plain_ms, "decode_vs_plain": ratio}


def memory(model, prompts, config: SamplingConfig) -> dict:
    """The compiled program's own estimate, the KV cache size the config implies, and the size of
    the per-layer weights the sampler slices out of the stacked layers once per call (a copy)."""
    graphdef, state = nnx.split(model)
    P, Lp = len(prompts), sampler.prompt_bucket(len(prompts[0]), config)
    args = (np.zeros((P, Lp), np.int32), np.ones((P, Lp), bool), jax.random.key(0),
            np.zeros((1, 1), np.int16), np.zeros((1,), np.int32))
    compiled = sampler._generate.lower(graphdef, state, *args, config=config, eos_ids=(), stops=(),
                                       pad_id=0).compile()
    ma = compiled.memory_analysis()
    c = model.config
    B, S = P * config.num_samples, Lp + config.max_new_tokens
    kv = 2 * c.num_layers * B * c.num_kv_heads * S * c.head_dim * np.dtype(config.cache_dtype or c.compute_dtype).itemsize
    layers = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model.layers)))
    return {
        "temp_mib": round(ma.temp_size_in_bytes / 2**20, 1),
        "layer_weights_mib": round(layers / 2**20, 1),
        "kv_cache_mib": round(kv / 2**20, 1),
        "B_N_V_f32_mib": round(B * config.max_new_tokens * c.vocab_size * 4 / 2**20, 1),
    }


def time_transformers(model_dir, prompts, new_tokens: int, dtype: str, repeats: int, group: int) -> float:
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
    ids = torch.tensor(np.asarray(prompts), device=device)
    kw = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, pad_token_id=0, eos_token_id=None,
              attention_mask=torch.ones_like(ids), num_return_sequences=group)
    best = float("inf")
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)  # warm-up
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    assert out.shape == (len(prompts) * group, ids.shape[1] + new_tokens)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--group", type=int, default=1, help="samples per prompt (each batch is B/G prompts)")
    p.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (accelerator default)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-transformers", action="store_true")
    p.add_argument("--no-plain-jax", action="store_true", help="skip the decode-step comparison")
    args = p.parse_args(argv)

    dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    config = dataclasses.replace(SIZES[args.size], param_dtype=dtype, compute_dtype=dtype)
    model = create_model(config, make_mesh(MeshConfig()), seed=0)
    device = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
    emit({"kind": "setup", "size": args.size, "dtype": dtype, "device": device, "jax": jax.__version__,
          "date": time.strftime("%Y-%m-%d")})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_transformers:
            hf.save_model(model, tmp)
        for B in args.batch:
            if B % args.group:
                raise SystemExit(f"batch {B} is not a multiple of --group {args.group}")
            P = B // args.group
            prompts = np.random.default_rng(B).integers(0, config.vocab_size, (P, args.prompt_len)).tolist()
            scfg = SamplingConfig(max_prompt_len=args.prompt_len, min_prompt_bucket=args.prompt_len,
                                  max_new_tokens=args.new_tokens, temperature=1.0, eos_ids=(),
                                  num_samples=args.group)
            ours_s, compile_s = time_r1zero(model, prompts, scfg, args.repeats)
            row = {"kind": "rollout", "size": args.size, "batch": B, "group": args.group,
                   "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                   "r1zero_tok_s": round(B * args.new_tokens / ours_s, 1), "compile_s": round(compile_s, 2),
                   **memory(model, prompts, scfg)}
            if not args.no_plain_jax and args.new_tokens > 1:
                row.update(decode_steps(model, prompts, scfg, ours_s, args.repeats))
            if not args.no_transformers:
                hf_s = time_transformers(tmp, prompts, args.new_tokens, dtype, args.repeats, args.group)
                row["transformers_tok_s"] = round(B * args.new_tokens / hf_s, 1)
                row["ratio"] = round(hf_s / ours_s, 2)
            emit(row)
            rows.append(row)
    print(f"\nrollout throughput, {args.size} ({dtype}) on {device}, prompt {args.prompt_len}, "
          f"{args.new_tokens} new tokens, {args.group} sample(s) per prompt")
    print(f"{'batch':>6} {'r1zero tok/s':>13} {'transformers':>13} {'ratio':>6} {'temp MiB':>9} {'KV MiB':>7}"
          f" {'layers MiB':>11} {'step ms':>8} {'plain JAX':>9} {'x plain':>7}")
    nan = float("nan")
    for r in rows:
        print(f"{r['batch']:>6} {r['r1zero_tok_s']:>13,.0f} {r.get('transformers_tok_s', nan):>13,.0f}"
              f" {r.get('ratio', nan):>6.2f} {r['temp_mib']:>9} {r['kv_cache_mib']:>7} {r['layer_weights_mib']:>11}"
              f" {r.get('r1zero_decode_ms_step', nan):>8.2f} {r.get('plain_jax_decode_ms_step', nan):>9.2f}"
              f" {r.get('decode_vs_plain', nan):>7.2f}")


if __name__ == "__main__":
    main()
