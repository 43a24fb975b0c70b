"""base_aha, the first aha run's base (configs/aha_worked.py) and the start of the aha run's
(configs/pretrain_aha_guess.py): the main job's base, primed by continued pretraining on 3x2-digit
products where 30% of documents check themselves by casting out nines.

    r1zero pretrain --config configs/pretrain_aha.py --workdir runs/pretrain_aha

It starts from the shipped base_mult2 (2x2 digits; 15% of its documents checked by recomputing the
product with the factors swapped, a check as error-prone as the first pass) and reads 3x2-digit
"web text": 40% answer directly, 30% work the product out by partial products, and CHECK_SHARE (30%)
work it out and then cast out nines, a verdict made of single-digit sums that is cheaper and more
reliable than the product itself. Half of the checked documents hold a slip in the first pass (one
nines always catches); a rejected answer is redone digit by digit (single-digit products) and the redo
is checked again:

    Q: 614*55=? 614*5=3570 614*50=30700 3570+30700=34270 check: 6+1+4=11 1+1=2 5+5=10 1+0=1 2*1=2
    3+4+2+7+0=16 1+6=7 7 not 2 wait, 34270 is wrong, redo: 4*5=20 10*5=50 600*5=3000 ... 3770+30000=33770
    check: 6+1+4=11 1+1=2 5+5=10 1+0=1 2*1=2 3+3+7+7+0=20 2+0=2 2 ok A: 33770

A quarter of the documents are User/Assistant dialogues with <think>/<answer> tags, with more direct
answers (50%, 20% worked, 30% checked), as a chat would. The priming grid (README, "The aha run") trains
the same steps on the same seed with 5% and 0% checked documents (configs/pretrain_aha_check5.py,
configs/pretrain_aha_check0.py): only the share of checks differs, the worked share takes the rest.
"""

import dataclasses
from pathlib import Path

import r1zero
from r1zero.config import CorpusConfig, OptimConfig, PretrainConfig

BASE = Path(r1zero.__file__).parent / "assets" / "base_mult2"
CHECK_SHARE = 0.3


def with_check_share(config: PretrainConfig, share: float) -> PretrainConfig:
    """The same corpus with `share` of the plain and of the tagged documents checked (the worked share
    takes the rest; the direct shares are unchanged)."""
    c = config.corpus
    corpus = dataclasses.replace(c, worked=c.worked + c.self_check - share, self_check=share,
                                 tagged_mix=(c.tagged_mix[0], c.tagged_mix[1] + c.tagged_mix[2] - share, share))
    return dataclasses.replace(config, corpus=corpus)


def get_config() -> PretrainConfig:
    config = PretrainConfig(
        init_dir=str(BASE),
        corpus=CorpusConfig(digits=3, digits_b=2, direct=0.4, worked=0.3, self_check=0.3, tagged=0.25,
                            tagged_mix=(0.5, 0.2, 0.3), mistake_rate=0.5, check="nines", check_reliability=1.0,
                            recheck=True),
        optim=OptimConfig(learning_rate=2e-3, schedule="cosine", warmup_steps=50, weight_decay=0.01),
        seed=0,
        steps=1600,
        batch_size=16,
        seq_len=512,
        eval_every=100,
        eval_rows=32,
    )
    return with_check_share(config, CHECK_SHARE)
