"""Built-in tasks, templates and the checkpointable prompt iterator."""

from __future__ import annotations

import pytest

from r1zero.config import TaskConfig
from r1zero.data import PromptIterator, load_task, render
from r1zero.data.tasks import R1ZERO_TEMPLATE


def test_digits_task_answers_and_split():
    train, test = load_task(TaskConfig(operation="max", difficulty=3, eval_size=100), seed=0)
    assert len(train) == 900 and len(test) == 100
    assert not {ex["id"] for ex in train} & {ex["id"] for ex in test}
    for ex in train[:50]:
        digits = [int(d) for d in ex["question"].split()[1:-1]]
        assert ex["answer"] == str(max(digits)) and ex["prompt"] == ex["question"]
    again, _ = load_task(TaskConfig(operation="max", difficulty=3, eval_size=100), seed=0)
    other, _ = load_task(TaskConfig(operation="max", difficulty=3, eval_size=100), seed=1)
    assert [e["id"] for e in again] == [e["id"] for e in train] != [e["id"] for e in other]


def test_templates_and_bad_names():
    assert render("r1zero", "2+2?") == R1ZERO_TEMPLATE.replace("{prompt}", "2+2?")
    assert render("r1zero", "2+2?").endswith("User: 2+2?. Assistant:")
    with pytest.raises(ValueError, match="unknown template 'fancy'"):
        render("fancy", "x")
    with pytest.raises(ValueError, match="unknown dataset 'gsm9k'"):
        load_task(TaskConfig(dataset="gsm9k"), 0)
    with pytest.raises(ValueError, match="unknown digits operation"):
        load_task(TaskConfig(operation="median"), 0)


def test_iterator_is_deterministic_covers_epochs_and_resumes_exactly():
    examples = [{"id": str(i)} for i in range(10)]
    it = PromptIterator(examples, batch_size=4, seed=3)
    first = [[e["id"] for e in next(it)] for _ in range(5)]  # crosses two epoch boundaries
    assert sorted(sum(first[:2], []) + first[2][:2]) == sorted(str(i) for i in range(10))  # epoch 0 whole
    again = PromptIterator(examples, batch_size=4, seed=3)
    assert [[e["id"] for e in next(again)] for _ in range(5)] == first
    other = PromptIterator(examples, batch_size=4, seed=4)
    assert [[e["id"] for e in next(other)] for _ in range(5)] != first
    # Save mid-epoch, restore into a fresh iterator: exactly the next batches.
    it = PromptIterator(examples, batch_size=4, seed=3)
    next(it)
    state = it.get_state()
    rest = [[e["id"] for e in next(it)] for _ in range(3)]
    resumed = PromptIterator(examples, batch_size=4, seed=0)
    resumed.set_state(state)
    assert [[e["id"] for e in next(resumed)] for _ in range(3)] == rest == first[1:4]
