"""Control arm of configs/default.py: identical except that the reward is the format reward alone
(<think>...</think> <answer>...</answer>), with no reward for a correct answer. It shows how much of
the main run comes from the format reward, which by itself favours writing a <think> block."""

import dataclasses
import importlib.util
from pathlib import Path


def get_config():
    spec = importlib.util.spec_from_file_location("default", Path(__file__).with_name("default.py"))
    default = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(default)
    config = default.get_config()
    return dataclasses.replace(config, task=dataclasses.replace(config.task, rewards=("format",), reward_weights=(1.0,)))
