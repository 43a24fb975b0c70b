"""Control arm of configs/max_digits.py: identical except that the reward is a coin flip that ignores
correctness. Accuracy is still measured with the task's real checker."""

import dataclasses
from pathlib import Path

from r1zero.config import load_config_file


def get_config():
    config = load_config_file(str(Path(__file__).with_name("max_digits.py")))
    return dataclasses.replace(config, task=dataclasses.replace(config.task, rewards=("random",)))
