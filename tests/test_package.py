"""Packaging promises: heavy data libraries stay out of the model/sampler/trainer import path."""

from __future__ import annotations

import subprocess
import sys


def test_core_modules_import_without_grain_or_tfds():
    code = (
        "import sys, r1zero.cli, r1zero.models, r1zero.models.hf, r1zero.sharding, r1zero.tokenizer\n"
        "bad = [m for m in ('grain', 'tensorflow_datasets', 'tensorflow', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
