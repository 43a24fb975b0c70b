"""Control arm of configs/default.py: identical except that the reward is a coin flip that ignores
the completion's correctness and format. Accuracy is still measured with the real checker."""

import dataclasses
import importlib.util
from pathlib import Path


def get_config():
    spec = importlib.util.spec_from_file_location("default", Path(__file__).with_name("default.py"))
    default = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(default)
    config = default.get_config()
    return dataclasses.replace(config, task=dataclasses.replace(config.task, rewards=("random",), reward_weights=(1.0,)))
