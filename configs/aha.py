"""The aha run: self-correction that grows under RL because it pays.

Pure GRPO, the main job's recipe, on 3x2-digit products from the shipped base_aha_guess (made by
configs/pretrain_aha_guess.py). In its "web text" a product is answered at once, from memory (70% of
documents), or answered at once and then checked by casting out nines, with a rejected answer redone
digit by digit and checked again (30%); no document works a product out without checking it. From
memory the 4-layer, 0.8M-parameter model gets a 3x2-digit product right ~10% of the time, a limit of
its capacity that RL cannot sharpen away, while the check is a few single-digit sums and the redo is
careful: here the only careful route the base still takes runs through a check, so checking pays, and
keeps paying.

The metrics under self_check/ (check rate split by correctness, self-corrections wrong->right /
right->wrong, accuracy with vs without a check, false alarms, exact checks) tell a check that corrects
from a rise in reflective words; configs/aha_random_reward.py is the control. configs/aha_worked.py
is the first attempt, whose base can also work a product out unchecked (README, "The aha run").
"""

import dataclasses
from pathlib import Path

import r1zero
from r1zero.config import load_config_file

BASE = Path(r1zero.__file__).parent / "assets" / "base_aha_guess"


def get_config():
    config = load_config_file(str(Path(__file__).with_name("aha_worked.py")))
    # A guessed, rejected, redone and rechecked answer in the corpus is at most ~365 tokens (one per
    # character, one per tag); 416 leaves room for the model's own longer redos.
    return dataclasses.replace(config, model_dir=str(BASE),
                               sampling=dataclasses.replace(config.sampling, max_new_tokens=416))
