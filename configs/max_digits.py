"""The smallest GRPO run: learns on a 2-core CPU in about 30 seconds (a smoke test of the loop).

Model: a tiny Qwen2-architecture decoder (2 layers, width 64, 48k parameters) initialised at random
with a character tokenizer. Task: "max 3 8 4 =" -> "8" (the largest of three digits, 1,000 prompts;
128 held out and never trained on). Reward: exact match of the completion. Pure RL: the model has
never seen the task; it starts at chance (~1 in 10) and GRPO alone teaches it.
(The R1-Zero main job, from a pretrained base with <think>/<answer> and format rewards, is
configs/default.py.)
"""

from r1zero.config import GRPOConfig, ModelConfig, OptimConfig, SamplingConfig, TaskConfig, TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                          head_dim=16, qkv_bias=True, tie_embeddings=True),
        sampling=SamplingConfig(num_samples=8, max_new_tokens=1, temperature=1.0, max_prompt_len=32),
        grpo=GRPOConfig(advantage="grpo", aggregation="seq-mean-token-mean"),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=10, weight_decay=0.0),
        task=TaskConfig(dataset="digits", operation="max", difficulty=3, rewards=("exact_match",),
                        reward_weights=(1.0,), accuracy_reward="exact_match", eval_size=128),
        seed=0,
        steps=150,
        prompts_per_rollout=16,
        eval_every=25,
    )
