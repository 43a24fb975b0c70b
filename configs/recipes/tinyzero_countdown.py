"""TinyZero countdown: Qwen2.5-3B base learns to search for equations, from reward alone.

Source: Jiayi-Pan/TinyZero (scripts/train_tiny_zero.sh, README): Qwen2.5-3B base, countdown with 3-4
numbers, the R1-Zero style template, reward 1.0 for a correct equation, 0.1 for a formatted wrong
one, 0 without an <answer>; actor lr 1e-6, 256 prompts per rollout in mini-batches of 64, prompts up
to 256 tokens, responses up to 1024, temperature 1.0, KL coefficient 0.001.
Aims at: the TinyZero result, validation accuracy rising from ~0 to ~0.6-0.7 within a few hundred
rollouts, with responses that search ("let me try ...") and verify before answering.
Hardware: 8 x 80 GB GPUs (H100/A100), mesh fsdp=8; `r1zero info --config configs/recipes/*.py`
prints its memory per device.
Departures: TinyZero ran PPO with a critic and one sample per prompt; this is its GRPO rendering
(8 samples per prompt, group-relative advantages, no critic), as most reproductions run it. Our
countdown generator draws 3 numbers per problem (task.difficulty=4 for the harder half).
"""

from r1zero.config import (CheckpointConfig, GRPOConfig, MeshConfig, ModelConfig, OptimConfig, SamplingConfig,
                           TaskConfig, TrainConfig)

QWEN2_5_3B = ModelConfig(architecture="qwen2", vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                         num_layers=36, num_heads=16, num_kv_heads=2, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
                         qkv_bias=True, tie_embeddings=True, max_position_embeddings=32768,
                         param_dtype="bfloat16", compute_dtype="bfloat16", remat=True)


def get_config() -> TrainConfig:
    return TrainConfig(
        model_dir="Qwen/Qwen2.5-3B",
        model=QWEN2_5_3B,
        sampling=SamplingConfig(num_samples=8, max_prompt_len=256, max_new_tokens=1024, temperature=1.0,
                                stop_strings=("</answer>",)),
        grpo=GRPOConfig(advantage="grpo", aggregation="seq-mean-token-mean", beta=0.001, kl_estimator="k3"),
        optim=OptimConfig(learning_rate=1e-6, schedule="constant", max_grad_norm=1.0, micro_batches=4, share_prompts=True),
        task=TaskConfig(dataset="countdown", difficulty=3, max_number=100, max_target=1000, template="r1zero",
                        rewards=("countdown",), reward_weights=(1.0,), accuracy_reward="countdown",
                        train_size=80_000, eval_size=1024),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
        checkpoint=CheckpointConfig(every=100, keep=3, best_metric="eval/greedy_accuracy"),
        steps=1200,  # 300 rollouts of 4 optimizer steps (mini-batches of 64 prompts)
        prompts_per_rollout=256,
        num_minibatches=4,
        eval_every=100,
        log_completions=16,
        logprob_chunk_tokens=2048,
    )
