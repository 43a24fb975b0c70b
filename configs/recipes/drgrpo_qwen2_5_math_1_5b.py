"""Dr. GRPO: Qwen2.5-Math-1.5B on MATH levels 3-5 with the Qwen-Math template, unbiased objective.

Source: "Understanding R1-Zero-Like Training: A Critical Perspective" (Liu et al., arXiv 2503.20783)
and sail-sg/understand-r1-zero (examples/qwen2.5-math-1.5b.sh): advantages R - mean(R) without the
std division, a constant normaliser instead of per-completion length means, beta 0 (no reference
model), lr 1e-6 constant, 128 prompts x 8 samples per rollout, temperature 1.0, prompts up to 1024
tokens and generations up to 3000, the qwen_math template, a binary boxed-answer reward.
Aims at: Oat-Zero-1.5B, average 42.1 over AIME24/AMC/MATH500/Minerva/OlympiadBench (MATH500 74.2,
from 33.0 for the base under its default template), with response lengths that do not balloon.
Hardware: 8 x 40 GB GPUs (the paper's 8 x A100-40G), mesh fsdp=8.
Data: MATH is not shipped. Put MATH levels 3-5 (train.jsonl: problem, solution[, answer]) and
MATH500 (test.jsonl) in data/math_lvl3to5, or point task.path elsewhere
(--set task.path=DIR); the CHAMP problems (task.eval_split=champ) need no files.
Departures: the paper's 1.5B script trains on the full MATH train set (math_12k); the levels 3-5
set is its 7B recipe and the README's minimalist recipe.
"""

from r1zero.config import (CheckpointConfig, GRPOConfig, MeshConfig, ModelConfig, OptimConfig, SamplingConfig,
                           TaskConfig, TrainConfig)

QWEN2_5_MATH_1_5B = ModelConfig(architecture="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128, rope_theta=10000.0,
                                rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=True, max_position_embeddings=4096,
                                param_dtype="bfloat16", compute_dtype="bfloat16", remat=True)


def get_config() -> TrainConfig:
    return TrainConfig(
        model_dir="Qwen/Qwen2.5-Math-1.5B",
        model=QWEN2_5_MATH_1_5B,
        sampling=SamplingConfig(num_samples=8, max_prompt_len=1024, max_new_tokens=3000, temperature=1.0,
                                stop_strings=("<|im_end|>",)),
        grpo=GRPOConfig(advantage="mean_only", aggregation="constant", beta=0.0),
        optim=OptimConfig(learning_rate=1e-6, schedule="constant", max_grad_norm=1.0, micro_batches=8, share_prompts=True),
        task=TaskConfig(dataset="math", path="data/math_lvl3to5", template="qwen_math", rewards=("math",),
                        reward_weights=(1.0,), accuracy_reward="math", eval_split="test"),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
        checkpoint=CheckpointConfig(every=64, keep=3, best_metric="eval/greedy_accuracy"),
        steps=800,  # 100 rollouts of 8 optimizer steps (128 completions each)
        prompts_per_rollout=128,
        num_minibatches=8,
        eval_every=128,
        log_completions=16,
        logprob_chunk_tokens=2048,
    )
