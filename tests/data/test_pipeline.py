"""tfds builders read back with grain: determinism, host shards, exact resume, templates, errors."""

from __future__ import annotations

import json

import pytest

from r1zero.config import TaskConfig
from r1zero.errors import UserError
from r1zero.data import load_task, render
from r1zero.data import builders
from r1zero.data.pipeline import PromptIterator, decode
from r1zero.data.templates import R1ZERO

DIGITS = TaskConfig(dataset="digits", operation="max", difficulty=2, eval_size=20)  # 100 examples


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return builders.builder(DIGITS, seed=0, data_dir=tmp_path_factory.mktemp("tfds")).as_data_source("train")


def ids(batches):
    return [[e["id"] for e in b] for b in batches]


def take(it, n):
    return ids(next(it) for _ in range(n))


def test_builder_materialises_array_record_and_reads_back(tmp_path, source):
    assert len(source) == 80
    ex = decode(source[0])
    assert set(ex) >= {"id", "question", "answer"} and ex["answer"] == str(max(map(int, ex["question"].split()[1:3])))
    files = [p.name for p in tmp_path.parent.rglob("*") if "array_record" in p.name]
    assert files  # ArrayRecord on disk, no TensorFlow involved
    other = builders.builder(TaskConfig(dataset="digits", operation="min", difficulty=2, eval_size=20), 0, tmp_path)
    assert other.builder_config.name != builders.builder(DIGITS, 0, tmp_path).builder_config.name  # knobs → new build


def test_order_is_deterministic_per_seed_and_covers_each_epoch(source):
    prep = lambda ex: ex
    a = take(PromptIterator(source, 10, seed=1, prepare=prep, process_index=0, process_count=1), 16)
    b = take(PromptIterator(source, 10, seed=1, prepare=prep, process_index=0, process_count=1), 16)
    c = take(PromptIterator(source, 10, seed=2, prepare=prep, process_index=0, process_count=1), 16)
    assert a == b and a != c
    epoch0, epoch1 = sum(a[:8], []), sum(a[8:], [])
    assert sorted(epoch0) == sorted(epoch1) and len(set(epoch0)) == 80 and epoch0 != epoch1  # reshuffled


def test_two_hosts_see_disjoint_shards_covering_the_epoch(source):
    hosts = [PromptIterator(source, 5, seed=3, prepare=lambda e: e, process_index=i, process_count=2) for i in range(2)]
    seen = [sum(take(h, 8), []) for h in hosts]  # 8 batches x 5 x 2 hosts = one epoch of 80
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(decode(source[i])["id"] for i in range(80))


def test_resume_mid_epoch_continues_with_exactly_the_next_examples(source):
    it = PromptIterator(source, 6, seed=4, prepare=lambda e: e, process_index=0, process_count=1)
    take(it, 5)
    state = json.loads(json.dumps(it.get_state()))  # survives serialisation
    expected = take(it, 7)
    resumed = PromptIterator(source, 6, seed=4, prepare=lambda e: e, process_index=0, process_count=1)
    resumed.set_state(state)
    assert take(resumed, 7) == expected
    with pytest.raises(ValueError, match="state is for seed 4, this run has seed 5"):
        PromptIterator(source, 6, seed=5, prepare=lambda e: e, process_index=0, process_count=1).set_state(state)


def test_the_next_batch_is_read_ahead_in_the_background_without_changing_anything(source):
    import threading

    import grain

    threads, bad = [], {"id": None}

    def prep(ex):
        threads.append(threading.current_thread().name)
        if ex["id"] == bad["id"]:
            raise UserError(f"row {ex['id']}: bad record")
        return ex

    it = PromptIterator(source, 6, seed=7, prepare=prep, process_index=0, process_count=1)
    shuffled = grain.MapDataset.source(source).shuffle(seed=7).repeat()  # grain read directly
    reference = [[decode(shuffled[b * 6 + i])["id"] for i in range(6)] for b in range(30)]
    assert take(it, 20) == reference[:20]  # across an epoch boundary (80 rows)
    assert threads.count("MainThread") == 6 and len(threads) >= 20 * 6  # only the first batch in the caller's thread
    it.set_state({"position": 3 * 6, "seed": 7})  # while batch 20 is being read ahead
    assert take(it, 4) == reference[3:7]
    bad["id"] = reference[8][2]  # batch 8 fails: batch 7 (read, then 8 read ahead) comes through
    it.set_state({"position": 7 * 6, "seed": 7})
    assert take(it, 1) == reference[7:8]
    with pytest.raises(UserError, match=f"row {bad['id']}: bad record"):
        next(it)


def test_resume_on_a_different_number_of_hosts_continues_the_global_stream(source):
    two = [PromptIterator(source, 4, seed=5, prepare=lambda e: e, process_index=i, process_count=2) for i in range(2)]
    for h in two:
        take(h, 3)
    state = two[0].get_state()
    assert state == two[1].get_state() and state["position"] == 24
    single = PromptIterator(source, 8, seed=5, prepare=lambda e: e, process_index=0, process_count=1)
    reference = sum(take(single, 5), [])  # the global stream from the start
    one = PromptIterator(source, 8, seed=5, prepare=lambda e: e, process_index=0, process_count=1)
    one.set_state(state)
    assert sum(take(one, 2), []) == reference[24:40]


def test_load_task_templates_and_keeps_held_out_apart(tmp_path):
    config = TaskConfig(dataset="digits", operation="max", difficulty=2, eval_size=20, template="r1zero")
    it, held_out = load_task(config, seed=0, data_dir=tmp_path, batch_size=4)
    batch = next(it)
    assert batch[0]["prompt"] == R1ZERO.format(prompt=batch[0]["question"])
    assert len(held_out) == 20 and not {e["id"] for e in held_out} & {e["id"] for e in it.examples()}


def test_templates():
    assert render("plain", "2+2") == "2+2"
    assert render("qwen_math", "2+2").endswith("<|im_start|>user\n2+2<|im_end|>\n<|im_start|>assistant\n")
    assert "\\boxed{}" in render("qwen_math", "x")
    assert render("Q: {prompt}\nA:", "2+2") == "Q: 2+2\nA:"
    with pytest.raises(ValueError, match="nor a string with a {prompt} slot"):
        render("Question without a slot", "2+2")


def test_chat_template(tmp_path):
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    assert render("chat", "2+2?", tmp_path) == "<|user|>2+2?\n<|assistant|>"
    with pytest.raises(ValueError, match="has no chat template"):
        render("chat", "x", tmp_path / "missing")


@pytest.mark.parametrize("template, message", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "took over 2.0s"),
    ("{% for i in range(100000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}", "to over 1,048,576 characters"),
    ("{{ 'x' * 1000000000 }}", "repetition of 1,000,000,000 items is too large"),
    ("{{ 2 ** 1000000000 }}", "exponent above 64"),
])
def test_chat_templates_are_bounded_in_size_and_time(tmp_path, template, message):
    """A chat template is code from a model directory: one that loops for long or renders hundreds
    of MB is stopped with an error naming the file, not run to the end."""
    import time

    (tmp_path / "chat_template.jinja").write_text(template)
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=message):
        render("chat", "2+2?", tmp_path)
    assert time.perf_counter() - t0 < 30


def test_empty_and_missing_inputs(tmp_path):
    with pytest.raises(ValueError, match="training split is empty"):
        PromptIterator([], 4, 0, lambda e: e, 0, 1)
    with pytest.raises(FileNotFoundError, match="task.path .* does not exist"):
        load_task(TaskConfig(dataset="jsonl", path=str(tmp_path / "none.jsonl")), 0, tmp_path, 4)
    with pytest.raises(ValueError, match="has no train split"):
        load_task(TaskConfig(dataset="math"), 0, tmp_path, 4)  # CHAMP alone is an evaluation set


def test_humaneval_is_for_evaluation_only(tmp_path):
    with pytest.raises(UserError, match="humaneval is for evaluation only"):
        load_task(TaskConfig(dataset="humaneval"), 0, tmp_path, 4)
    iterator, held_out = load_task(TaskConfig(dataset="humaneval"), 0, tmp_path, 4, train=False)
    assert iterator is None and len(held_out) == 164
    assert {ex["kind"] for ex in held_out} == {"function"} and all(ex["entry_point"] in ex["context"] for ex in held_out)
