"""Control arm of configs/max_digits.py: identical except that the reward is a coin flip that ignores
correctness. Accuracy is still measured with the task's real checker."""

import dataclasses
import importlib.util
from pathlib import Path


def get_config():
    spec = importlib.util.spec_from_file_location("max_digits", Path(__file__).with_name("max_digits.py"))
    default = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(default)
    config = default.get_config()
    return dataclasses.replace(config, task=dataclasses.replace(config.task, rewards=("random",)))
