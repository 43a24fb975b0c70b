"""The GPU suite in one call: sampler throughput, train-step MFU and the GRPO step, into one JSONL.

    python -m r1zero.bench.suite --out $OUT/suite.jsonl [--trl-python /path/to/trl/bin/python]
    python -m r1zero.bench.suite --tiny --out /tmp/suite.jsonl     # the same code on small shapes (CPU)

On one H100/H200 it runs in under 8 minutes:
- sampler: tokens/s of r1zero's sampler for random Qwen2.5-0.5B and 1.5B shapes at batch 16, 64 and
  256 (prompt 128, 256 new tokens, no EOS, bf16, temperature 1), beside transformers `generate` (when
  torch and transformers import) and the plain JAX loop (`plain_decode`) on the same weights, and
  the fraction of the memory-bandwidth roofline (weights plus the average filled KV cache read once
  per step, at the copy bandwidth measured here);
- train: the GRPO update's model FLOP utilisation at the 0.5B shape (8 rows of 1,024 tokens, bf16);
- grpo: the whole GRPO step at the 0.5B shape, 16 prompts x G=8, 256 new tokens (each prompt run once
  in the update: `optim.share_prompts`), beside TRL when `--trl-python` names a python with trl
  (`r1zero.bench.grpo_step`).
Reference points (one H200): transformers generate 250 / 1,044 / 3,747 tok/s at batch 16 / 64 /
256, the plain JAX loop 8.1k / 23.1k / 46.5k, TRL's GRPO step 9.9 s. Each line of the JSONL is one
measurement (`section` says which); a failing section is recorded as an error and the rest still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

def emit(out: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def copy_bandwidth() -> float:
    """Bytes per second of a device array copy (read + write), the roofline's bandwidth."""
    import jax
    import jax.numpy as jnp

    from r1zero.bench.grpo_step import best_seconds

    n = (1 << 28) if jax.default_backend() != "cpu" else (1 << 24)  # 1 GiB / 64 MiB of float32
    return 2 * 4 * n / best_seconds(jax.jit(lambda a: a * 1.0000001), jnp.ones((n,), jnp.float32))


def sampler_section(out: Path, tiny: bool, dtype: str) -> None:
    import jax
    import numpy as np

    from flax import nnx

    from r1zero.bench import rollout
    from r1zero.config import MeshConfig, SamplingConfig
    from r1zero.models import create_model, hf, param_count
    from r1zero.sharding import make_mesh

    sizes, batches, Lp, N, repeats = (["tiny"], [2, 4], 8, 8, 1) if tiny else (["0.5b", "1.5b"], [16, 64, 256], 128, 256, 1)
    bandwidth = copy_bandwidth()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        with_hf = True
    except ImportError:
        with_hf = False
    for size in sizes:
        config = dataclasses.replace(rollout.SIZES[size], param_dtype=dtype, compute_dtype=dtype)
        model = create_model(config, make_mesh(MeshConfig()), seed=0)
        itemsize = np.dtype(jax.numpy.dtype(dtype)).itemsize
        weight_bytes = param_count(nnx.state(model)) * itemsize
        with tempfile.TemporaryDirectory() as tmp:
            if with_hf:
                hf.save_model(model, tmp)
            for B in batches:
                prompts = np.random.default_rng(B).integers(0, config.vocab_size, (B, Lp)).tolist()
                scfg = SamplingConfig(max_prompt_len=Lp, min_prompt_bucket=Lp, max_new_tokens=N, temperature=1.0,
                                      eos_ids=())
                ours_s, compile_s = rollout.time_r1zero(model, prompts, scfg, repeats)
                plain_s = rollout.time_plain_decode(model, B, Lp, N, repeats)
                kv_bytes = 2 * config.num_layers * B * config.num_kv_heads * config.head_dim * (Lp + N / 2) * itemsize
                row = {"section": "sampler", "size": size, "dtype": dtype, "batch": B, "prompt_len": Lp, "new_tokens": N,
                       "r1zero_tok_s": B * N / ours_s, "plain_jax_tok_s": B * N / plain_s, "compile_s": compile_s,
                       "roofline_tok_s": B * bandwidth / (weight_bytes + kv_bytes), "copy_bandwidth_gb_s": bandwidth / 1e9}
                row["roofline_fraction"] = row["r1zero_tok_s"] / row["roofline_tok_s"]
                row["vs_plain_jax"] = row["r1zero_tok_s"] / row["plain_jax_tok_s"]
                if with_hf:
                    hf_s = rollout.time_transformers(tmp, prompts, N, dtype, repeats, 1)
                    row["transformers_tok_s"] = B * N / hf_s
                    row["vs_transformers"] = row["r1zero_tok_s"] / row["transformers_tok_s"]
                emit(out, row)


def train_section(out: Path, tiny: bool, dtype: str) -> None:
    import jax
    import numpy as np

    from r1zero.bench import rollout
    from r1zero.config import GRPOConfig, MeshConfig, OptimConfig, TrainConfig
    from r1zero.models import create_model
    from r1zero.sharding import make_mesh, rows_to_global
    from r1zero.train import init_training

    size, B, T = ("tiny", 4, 32) if tiny else ("0.5b", 8, 1024)
    config = dataclasses.replace(rollout.SIZES[size], param_dtype=dtype, compute_dtype=dtype)
    mesh = make_mesh(MeshConfig())
    model = create_model(config, mesh, seed=0)
    tc = TrainConfig(model=config, grpo=GRPOConfig(beta=0.0), optim=OptimConfig(learning_rate=1e-6))
    _, params, _, opt_state, step = init_training(model, tc, mesh)
    rng = np.random.default_rng(0)
    batch = {"tokens": rng.integers(0, config.vocab_size, (B, T)).astype(np.int32), "mask": np.ones((B, T), bool),
             "loss_mask": np.ones((B, T), bool), "old_logp": np.full((B, T), -12.0, np.float32),
             "adv": rng.standard_normal(B).astype(np.float32)}
    batch = [rows_to_global(batch, mesh)]  # one micro-batch
    t0 = time.perf_counter()
    params, opt_state, stats = step(params, opt_state, batch)
    jax.block_until_ready(stats)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(2 if tiny else 5):
        t0 = time.perf_counter()
        params, opt_state, stats = step(params, opt_state, batch)
        jax.block_until_ready(stats)
        times.append(time.perf_counter() - t0)
    from r1zero.bench.grpo_step import peak_flops, update_flops
    from r1zero.models.hf import hf_config_dict

    flops = update_flops(hf_config_dict(config), B, B * T, prompt_len=0)  # every token is trained on
    peak, what = peak_flops()
    best = min(times)
    emit(out, {"section": "train", "size": size, "dtype": dtype, "rows": B, "tokens_per_row": T, "step_s": best,
               "compile_s": compile_s, "tokens_per_s": B * T / best, "model_tflop_s": flops / best / 1e12,
               "mfu": flops / best / peak, "peak": what, "loss": float(stats["loss"])})


def grpo_section(out: Path, tiny: bool, trl_python: str | None, work: Path) -> None:
    args = ["--shape", "tiny", "--prompts", "2", "--G", "2", "--max-new", "8", "--steps", "2"] if tiny else \
           ["--shape", "qwen2.5-0.5b", "--prompts", "16", "--G", "8", "--max-new", "256", "--steps", "3"]
    cmd = [sys.executable, "-m", "r1zero.bench.grpo_step", *args, "--share-prompts", "--rounds", "1", "--work", str(work),
           "--out", str(work / "grpo.jsonl")]
    if trl_python:
        cmd += ["--trl-python", trl_python]
    done = subprocess.run(cmd, text=True, capture_output=True)
    print(done.stdout[-3000:], file=sys.stderr)
    if done.returncode:
        raise RuntimeError(f"grpo_step failed (exit {done.returncode}): {done.stderr[-2000:]}")
    for line in (work / "grpo.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("kind") == "summary":
            emit(out, {"section": "grpo", **{k: v for k, v in row.items() if k != "kind"}})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the JSONL to append to")
    p.add_argument("--tiny", action="store_true", help="small shapes: checks the suite on a CPU in about a minute")
    p.add_argument("--trl-python", help="a python with trl for the GRPO step beside TRL")
    p.add_argument("--sections", nargs="+", default=["sampler", "train", "grpo"], choices=["sampler", "train", "grpo"])
    args = p.parse_args(argv)
    import jax

    dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    emit(args.out, {"section": "setup", "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
                    "backend": jax.default_backend(), "jax": jax.__version__, "dtype": dtype, "tiny": args.tiny,
                    "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    with tempfile.TemporaryDirectory(prefix="r1zero-suite-") as work:
        runs = {"sampler": lambda: sampler_section(args.out, args.tiny, dtype),
                "train": lambda: train_section(args.out, args.tiny, dtype),
                "grpo": lambda: grpo_section(args.out, args.tiny, args.trl_python, Path(work))}
        for name in args.sections:
            t0 = time.perf_counter()
            try:
                runs[name]()
            except Exception as e:  # one broken section must not cost the others' numbers
                traceback.print_exc()
                emit(args.out, {"section": name, "error": f"{type(e).__name__}: {e}"[:2000]})
            emit(args.out, {"section": f"{name}_done", "seconds": time.perf_counter() - t0})
    emit(args.out, {"section": "done", "seconds": time.perf_counter() - t_start})


if __name__ == "__main__":
    main()
