"""google-tunix GRPOLearner (its vanilla rollout: tunix's own Sampler) on the benchmark's work; run by
`r1zero.bench.grpo_step` with the Tunix venv's python: `python tunix_grpo.py SPEC_JSON`.

tunix's Qwen2 loaded from the shared safetensors (tied embeddings; float32 on CPU, bf16 on a GPU),
P prompts per batch, num_generations G (tunix repeats each prompt G times and prefills every row),
max_tokens_to_generate = the budget (fixed lengths: eos_tokens=[-1], no token ever matches, every
row runs it all; realistic: EOS id 0 ends a row), kv_cache_size = 32 + budget, temperature 1,
top_p 1, beta 0 (no reference model), num_iterations 1, one optimizer step per batch, AdamW after
global-norm clipping 1.0, loss "sequence-mean-token-mean", mesh (fsdp=1, tp=1), actor and rollout
share one model. A step ends with `_run_global_step`; generation is `rl_cluster.generate`;
log-probs are `get_old_per_token_logps`/`get_ref_per_token_logps` (none here); the update is
`rl_cluster.update_actor`.
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # r1zero.bench.grpo_step: stdlib only at import
from r1zero.bench.grpo_step import PROMPT_LEN, finish  # noqa: E402


def main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    from importlib.metadata import version

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import transformers
    from tunix.models.qwen2 import model as qwen2_model
    from tunix.models.qwen2 import params as qwen2_params
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo import grpo_learner
    from tunix.rl.rollout import base_rollout
    from tunix.utils import mesh as mesh_lib

    s, G, N = spec["shape"], spec["G"], spec["max_new"]
    dtype = jnp.float32 if jax.devices()[0].platform == "cpu" else jnp.bfloat16
    tok = transformers.AutoTokenizer.from_pretrained(spec["model_dir"])
    mesh = mesh_lib.create_mesh((1, 1), ("fsdp", "tp"))
    cfg = qwen2_model.ModelConfig(
        num_layers=s["num_hidden_layers"], vocab_size=s["vocab_size"], embed_dim=s["hidden_size"],
        hidden_dim=s["intermediate_size"], num_heads=s["num_attention_heads"], head_dim=s["head_dim"],
        num_kv_heads=s["num_key_value_heads"], rope_theta=1_000_000, norm_eps=1e-6, use_tied_embedding=True,
        dtype=dtype, param_dtype=dtype)
    model = qwen2_params.create_model_from_safe_tensors(spec["model_dir"], cfg, mesh, dtype=dtype)
    rollout_config = base_rollout.RolloutConfig(
        max_tokens_to_generate=N, max_prompt_length=PROMPT_LEN, kv_cache_size=PROMPT_LEN + N, temperature=1.0,
        top_p=1.0, top_k=None, eos_tokens=[0] if spec["eos"] else [-1])
    training_config = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-6, b1=0.9, b2=0.99, weight_decay=0.0)),
        eval_every_n_steps=10_000, max_steps=spec["steps"])
    cluster_config = rl_cluster_lib.ClusterConfig(
        role_to_mesh={rl_cluster_lib.Role.ACTOR: mesh, rl_cluster_lib.Role.REFERENCE: mesh,
                      rl_cluster_lib.Role.ROLLOUT: mesh},
        rollout_engine="vanilla", offload_to_cpu=False, training_config=training_config, rollout_config=rollout_config)
    beta = spec.get("beta", 0.0)
    reference = qwen2_params.create_model_from_safe_tensors(spec["model_dir"], cfg, mesh, dtype=dtype) if beta else None
    cluster = rl_cluster_lib.RLCluster(actor=model, reference=reference, tokenizer=tok, cluster_config=cluster_config)
    algo = grpo_learner.GRPOConfig(num_generations=G, num_iterations=1, beta=beta, epsilon=0.2,
                                   loss_agg_mode="sequence-mean-token-mean")

    def reward(prompts, completions, **kw):
        return [len(c) / 64.0 for c in completions]

    learner = grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=algo, reward_fns=[reward])
    marks = {"gen": [], "tokens": [], "logprob": [], "update": [], "update_end": [], "t0": time.perf_counter()}
    wait = lambda: jax.block_until_ready(jax.tree.leaves(cluster.actor_trainer.model))

    def timed(fn, key):
        def wrapped(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            if key == "update":
                wait()
            marks[key].append(time.perf_counter() - t)
            if key == "gen":  # tokens come back to the host: synchronous
                marks["tokens"].append(int(sum(len(x) for x in out.tokens)))
            return out
        return wrapped

    def timed_global(*a, **k):
        out = global_step(*a, **k)
        wait()
        marks["update_end"].append(time.perf_counter())
        return out

    global_step = learner._run_global_step
    cluster.generate, cluster.update_actor = timed(cluster.generate, "gen"), timed(cluster.update_actor, "update")
    for name in ("get_old_per_token_logps", "get_ref_per_token_logps"):
        if hasattr(cluster, name):
            setattr(cluster, name, timed(getattr(cluster, name), "logprob"))
    learner._run_global_step = timed_global
    learner.train([{"prompts": np.array(spec["prompt_texts"])} for _ in range(spec["steps"])])
    print(json.dumps(finish(spec, marks, "tunix", {"tunix": version("google-tunix"), "jax": jax.__version__})),
          flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
