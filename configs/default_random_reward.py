"""Control arm of configs/default.py: identical except that the reward is a coin flip that ignores
the completion's correctness and format. Accuracy is still measured with the real checker."""

import dataclasses
from pathlib import Path

from r1zero.config import load_config_file


def get_config():
    config = load_config_file(str(Path(__file__).with_name("default.py")))
    return dataclasses.replace(config, task=dataclasses.replace(config.task, rewards=("random",), reward_weights=(1.0,)))
