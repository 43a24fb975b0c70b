"""The main job: a miniature R1-Zero "aha moment" on a 2-core CPU.

Pure GRPO from the shipped pretrained base (r1zero/assets/base_mult2, made by
configs/pretrain_base.py): the base has read "web text" where most products of two 2-digit numbers
are answered directly (unreliable for a 0.8M-parameter model) and some are worked out step by step
(reliable), and a quarter of the documents happen to use <think>/<answer> tags. RL alone, with an
accuracy reward (1 when the <answer> is the product) and a small format reward (0.2 for
<think>...</think> <answer>...</answer>), has to discover that thinking pays.

The prompt is the R1-Zero template's shape without its English instructions, the form the base saw:
"User: 47*86=? Assistant:". Held-out products (never in the corpus, never trained on) are evaluated
greedily and sampled every 25 steps; step 0 is the epoch-0 audit of the base.
"""

from pathlib import Path

import r1zero
from r1zero.config import CheckpointConfig, GRPOConfig, OptimConfig, SamplingConfig, TaskConfig, TrainConfig

BASE = Path(r1zero.__file__).parent / "assets" / "base_mult2"


def get_config() -> TrainConfig:
    return TrainConfig(
        model_dir=str(BASE),
        sampling=SamplingConfig(num_samples=8, max_new_tokens=128, temperature=1.0, max_prompt_len=32,
                                stop_strings=("</answer>",)),
        # Dr. GRPO's constant normaliser; a KL penalty to the base (k3, as DeepSeekMath's GRPO) keeps runs
        # whose reward carries no signal (the controls) from random-walking away: without it Adam turns
        # pure-noise gradients into full-size steps (README: the random-reward control fell to garbage).
        grpo=GRPOConfig(advantage="grpo", aggregation="constant", beta=0.04, kl_estimator="k3"),
        optim=OptimConfig(learning_rate=1e-4, schedule="constant", weight_decay=0.0, max_grad_norm=1.0),
        task=TaskConfig(dataset="multiply", difficulty=2, template="dialogue", rewards=("answer", "format"),
                        reward_weights=(1.0, 0.2), accuracy_reward="answer", eval_size=256),
        checkpoint=CheckpointConfig(every=50, keep=2),
        seed=0,
        steps=200,
        prompts_per_rollout=16,
        eval_every=25,
        log_completions=128,
        logprob_chunk_tokens=1 << 16,  # a 77-token vocabulary: one chunk (chunking only pays for large vocabularies)
    )
