"""The priming grid's base with 0% checked documents: configs/pretrain_aha.py (same start, seed, steps and
direct share) with the check share at 0% instead of 30%, the worked share taking the rest."""

import importlib.util
from pathlib import Path


def get_config():
    spec = importlib.util.spec_from_file_location("pretrain_aha", Path(__file__).with_name("pretrain_aha.py"))
    aha = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aha)
    return aha.with_check_share(aha.get_config(), 0.0)
