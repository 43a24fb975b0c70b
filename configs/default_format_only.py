"""Control arm of configs/default.py: identical except that the reward is the format reward alone
(<think>...</think> <answer>...</answer>), with no reward for a correct answer. It shows how much of
the main run comes from the format reward, which by itself favours writing a <think> block."""

import dataclasses
from pathlib import Path

from r1zero.config import load_config_file


def get_config():
    config = load_config_file(str(Path(__file__).with_name("default.py")))
    return dataclasses.replace(config, task=dataclasses.replace(config.task, rewards=("format",), reward_weights=(1.0,)))
