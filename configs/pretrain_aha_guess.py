"""The guess-first aha base: base_aha continued on its 3x2-digit corpus, except that a checked
document's first pass is the product stated at once, from memory, and no document works a product out
without checking it (the worked share answers directly instead).

    r1zero pretrain --config configs/pretrain_aha_guess.py --workdir runs/pretrain_aha_guess

A tiny model answers a 3x2-digit product from memory mostly wrong (~10% right), so the first pass is
wrong by the model's capacity, not only where the corpus slips, and RL cannot simply sharpen it away.
The check (casting out nines: single-digit sums) and the redo (digit by digit, checked again) are the
ones base_aha already writes:

    Q: 669*58=? 669*58=38872 check: 6+6+9=21 2+1=3 5+8=13 1+3=4 3*4=12 1+2=3 3+8+8+7+2=28 2+8=10 1+0=1
    1 not 3 wait, 38872 is wrong, redo: 9*8=72 60*8=480 ... 8802+30000=38802 check: ... 3 ok A: 38802

Its twin, configs/pretrain_aha_guess_worked.py, keeps base_aha's worked documents (partial products,
no check): there RL finds the careful method without the guess and selects checking away.
"""

import dataclasses
from pathlib import Path

import r1zero
from r1zero.config import PretrainConfig, load_config_file

BASE = Path(r1zero.__file__).parent / "assets" / "base_aha"


def guess_first(worked: bool) -> PretrainConfig:
    """configs/pretrain_aha.py from base_aha for 800 steps with the first pass guessed; without
    `worked` the worked share (plain and tagged) answers directly instead."""
    config = load_config_file(str(Path(__file__).with_name("pretrain_aha.py")))
    c = dataclasses.replace(config.corpus, first_pass="guess")
    if not worked:
        d, w, s = c.tagged_mix
        c = dataclasses.replace(c, direct=c.direct + c.worked, worked=0.0, tagged_mix=(d + w, 0.0, s))
    return dataclasses.replace(config, init_dir=str(BASE), steps=800, corpus=c)


def get_config() -> PretrainConfig:
    return guess_first(worked=False)
