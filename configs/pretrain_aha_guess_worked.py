"""configs/pretrain_aha_guess.py's twin that keeps base_aha's worked documents (30% of plain and 20% of
tagged documents work the product out by partial products and give it unchecked): the same start,
seed, steps and check share; only the worked documents differ."""

import importlib.util
from pathlib import Path


def get_config():
    spec = importlib.util.spec_from_file_location("pretrain_aha_guess", Path(__file__).with_name("pretrain_aha_guess.py"))
    guess = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guess)
    return guess.guess_first(worked=True)
