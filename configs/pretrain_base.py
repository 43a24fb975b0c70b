"""The base model of the main job: pretraining on the procedural multiplication corpus.

    r1zero pretrain --config configs/pretrain_base.py --workdir runs/pretrain_base

A 4-layer, width-128 Qwen2-architecture decoder with a character tokenizer (plus <think>,
</think>, <answer>, </answer> as single tokens), trained from random init on "web text" about
products of two 2-digit numbers. 75% of documents are plain text: 40% answer directly, 45% work the
product out step by step and 15% work it out and check themselves (half of those catch and fix a
slip). 25% happen to be written as a User/Assistant dialogue with <think>/<answer> tags, and these
mostly answer directly (70%; 25% think step by step, 5% think and check), as a chat would: so the
base, prompted in that form, usually answers at once, although it can work things out. The copy shipped in
r1zero/assets/base_mult2 was made by exactly this command (see its pretrain.json).
"""

from r1zero.config import CorpusConfig, ModelConfig, OptimConfig, PretrainConfig


def get_config() -> PretrainConfig:
    return PretrainConfig(
        model=ModelConfig(hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2,
                          head_dim=32, qkv_bias=True, tie_embeddings=True, max_position_embeddings=512),
        corpus=CorpusConfig(digits=2, direct=0.4, worked=0.45, self_check=0.15, tagged=0.25,
                            tagged_mix=(0.7, 0.25, 0.05), mistake_rate=0.5),
        optim=OptimConfig(learning_rate=3e-3, schedule="cosine", warmup_steps=100, weight_decay=0.01),
        seed=0,
        steps=1500,
        batch_size=32,
        seq_len=256,
        eval_every=250,
        eval_rows=32,
    )
