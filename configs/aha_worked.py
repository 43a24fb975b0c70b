"""The first aha run: a check after a worked-out first pass (the priming grid's RL config).

Pure GRPO, the main job's recipe, on 3x2-digit products from the shipped base_aha (made by
configs/pretrain_aha.py: the main job's base continued on 3x2-digit "web text" where 30% of documents
work the product out by partial products, then check the answer by casting out nines and redo a
rejected one digit by digit). RL selected the check while it paid, but the worked first pass improved
and self-correction fell (README, "The aha run"); configs/aha.py, whose first pass is a guess from
memory, is the run where it grows. configs/aha_worked_random_reward.py is the control.
"""

from pathlib import Path

import r1zero
from r1zero.config import CheckpointConfig, GRPOConfig, OptimConfig, SamplingConfig, TaskConfig, TrainConfig

BASE = Path(r1zero.__file__).parent / "assets" / "base_aha"


def get_config() -> TrainConfig:
    return TrainConfig(
        model_dir=str(BASE),
        # A checked-and-redone working is up to ~390 tokens (one per character, one per tag); the
        # longest (~0.1% of the corpus's) are cut at 384.
        sampling=SamplingConfig(num_samples=8, max_new_tokens=384, temperature=1.0, max_prompt_len=32,
                                stop_strings=("</answer>",)),
        grpo=GRPOConfig(advantage="grpo", aggregation="constant", beta=0.04, kl_estimator="k3"),
        optim=OptimConfig(learning_rate=1e-4, schedule="constant", weight_decay=0.0, max_grad_norm=1.0),
        task=TaskConfig(dataset="multiply", difficulty=3, difficulty_b=2, template="dialogue",
                        rewards=("answer", "format"), reward_weights=(1.0, 0.2), accuracy_reward="answer",
                        eval_size=128),
        checkpoint=CheckpointConfig(every=25, keep=2),
        seed=0,
        steps=100,
        prompts_per_rollout=16,
        eval_every=25,
        log_completions=128,
        logprob_chunk_tokens=1 << 16,
    )
