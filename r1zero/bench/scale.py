"""Per-mesh costs: sampler throughput in each parameter layout, and bytes per device.

    python -m r1zero.bench.scale                 # 8 fake CPU devices (set before jax starts)
    python -m r1zero.bench.scale --size 0.5b     # on an accelerator host, its real devices

For every mesh shape: generated tokens/s of the sampler with the weights in the training layout
(FSDP: gathered at every decoded token), the `tensor` layout (no FSDP split) and fully `replicated`
(resharded once per rollout); and per device: parameter + optimizer bytes, and the compiled
temporary bytes of the sampler program and of the train step. Prints a table and JSON lines.
On fake CPU devices the collectives are memory copies: the table ranks layouts for CPU runs only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __name__ == "__main__" and "--real-devices" not in sys.argv:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

MESHES = [(1, 1, 1), (8, 1, 1), (1, 8, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)]


def measure(size: str, batch: int, prompt_len: int, new_tokens: int) -> list[dict]:
    import dataclasses

    import jax
    import numpy as np

    from r1zero import sampler
    from r1zero.bench.rollout import SIZES
    from r1zero.config import MeshConfig, OptimConfig, SamplingConfig, TrainConfig
    from r1zero.models import create_model
    from r1zero.sharding import make_mesh, rows_to_global
    from r1zero.train import init_training

    model_cfg = SIZES[size]
    if jax.default_backend() != "cpu":
        model_cfg = dataclasses.replace(model_cfg, param_dtype="bfloat16", compute_dtype="bfloat16")
    prompts = np.random.default_rng(0).integers(0, model_cfg.vocab_size, (batch, prompt_len)).tolist()
    rows = []
    for shape in MESHES:
        if np.prod(shape) > jax.device_count():
            continue
        devices = jax.devices()[: int(np.prod(shape))]
        mesh = make_mesh(MeshConfig(*shape), devices)
        model = create_model(model_cfg, mesh, seed=0)
        row = {"mesh": str(shape)}
        for layout in ("train", "tensor", "replicated"):
            scfg = SamplingConfig(max_prompt_len=prompt_len, min_prompt_bucket=prompt_len, max_new_tokens=new_tokens,
                                  eos_ids=(), param_layout=layout)
            sampler.sample(model, prompts, jax.random.key(0), scfg, None)  # compile
            t0 = time.perf_counter()
            sampler.sample(model, prompts, jax.random.key(1), scfg, None)
            row[f"{layout}_tok_s"] = round(batch * new_tokens / (time.perf_counter() - t0), 1)
        from flax import nnx

        graphdef, state = nnx.split(model)
        args = (np.zeros((batch, prompt_len), np.int32), np.ones((batch, prompt_len), bool), jax.random.key(0),
                np.zeros((1, 1), np.int16), np.zeros((1,), np.int32))
        scfg = dataclasses.replace(scfg, param_layout="train")
        compiled = sampler._generate.lower(graphdef, state, *args, config=scfg, eos_ids=(), stops=(), pad_id=0,
                                           mesh=mesh).compile()
        row["sampler_temp_mib"] = round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 2)
        config = TrainConfig(model=model_cfg, optim=OptimConfig(learning_rate=1e-5))
        _, params, _, opt_state, step = init_training(model, config, mesh)
        row["param_opt_mib_dev0"] = round(sum(x.addressable_shards[0].data.nbytes
                                              for x in jax.tree.leaves((params, opt_state))) / 2**20, 2)
        T = prompt_len + new_tokens
        b = {"tokens": np.zeros((batch, T), np.int32), "mask": np.ones((batch, T), bool),
             "loss_mask": np.ones((batch, T), bool), "old_logp": np.zeros((batch, T), np.float32),
             "adv": np.ones((batch,), np.float32)}
        # The micro-batch program (forward and backward) holds the step's temporaries.
        ma = step.accumulate.lower(params, params, rows_to_global(b, mesh)).compile().memory_analysis()
        row["train_temp_mib"] = round(ma.temp_size_in_bytes / 2**20, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--real-devices", action="store_true", help="do not fake 8 CPU devices")
    args = p.parse_args(argv)
    import jax

    rows = measure(args.size, args.batch, args.prompt_len, args.new_tokens)
    print(f"\nper-mesh costs, {args.size}, {jax.devices()[0].device_kind} x{jax.device_count()}, batch {args.batch}, "
          f"prompt {args.prompt_len}, {args.new_tokens} new tokens")
    head = ["mesh", "train_tok_s", "tensor_tok_s", "replicated_tok_s", "param_opt_mib_dev0", "sampler_temp_mib",
            "train_temp_mib"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(r[h]) for h in head))


if __name__ == "__main__":
    main()
