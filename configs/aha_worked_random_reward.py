"""Control arm of configs/aha_worked.py: identical except that the reward is a coin flip that ignores the
completion's correctness and format (accuracy and the self-check metrics are still measured)."""

import dataclasses
from pathlib import Path

from r1zero.config import load_config_file


def get_config():
    config = load_config_file(str(Path(__file__).with_name("aha_worked.py")))
    return dataclasses.replace(config, task=dataclasses.replace(config.task, rewards=("random",), reward_weights=(1.0,)))
