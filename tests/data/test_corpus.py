"""The pretraining corpus: deterministic, proportions as configured, arithmetic right, held-out pairs absent."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from r1zero.config import CorpusConfig
from r1zero.data import corpus

STEP = re.compile(r"(\d+)([*+])(\d+)=(\d+)")


def take(config, seed, n):
    return list(itertools.islice(corpus.documents(config, np.random.default_rng(seed)), n))


def test_same_seed_same_corpus_other_seed_other_corpus():
    c = CorpusConfig()
    assert [d["text"] for d in take(c, 3, 300)] == [d["text"] for d in take(c, 3, 300)]
    assert [d["text"] for d in take(c, 3, 300)] != [d["text"] for d in take(c, 4, 300)]


@pytest.mark.parametrize("shares", [(0.6, 0.3, 0.1, 0.25), (0.2, 0.2, 0.6, 0.8)])
def test_kind_and_tag_proportions_match_the_config(shares):
    direct, worked, check, tagged = shares
    c = CorpusConfig(direct=direct, worked=worked, self_check=check, tagged=tagged, mistake_rate=0.5)
    docs = take(c, 0, 6000)
    n = len(docs)
    for kind, want in zip(corpus.KINDS, (direct, worked, check)):
        got = sum(d["kind"] == kind for d in docs) / n
        assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / n), (kind, got, want)
    got = sum(d["tagged"] for d in docs) / n
    assert abs(got - tagged) < 4 * np.sqrt(tagged * (1 - tagged) / n)
    checks = [d for d in docs if d["kind"] == "self_check"]
    caught = sum("wait" in d["text"] for d in checks) / len(checks)
    assert abs(caught - 0.5) < 4 * np.sqrt(0.25 / len(checks))
    # The text says what its labels say.
    for d in docs:
        assert d["text"].startswith("User: ") == d["tagged"]
        assert ("=" in d["text"].split("?", 1)[1]) == (d["kind"] != "direct")
        assert ("check:" in d["text"]) == (d["kind"] == "self_check")


def test_tagged_documents_follow_their_own_mix():
    c = CorpusConfig(direct=0.4, worked=0.45, self_check=0.15, tagged=0.5, tagged_mix=(0.7, 0.25, 0.05))
    docs = take(c, 5, 8000)
    for tagged, mix in ((True, c.tagged_mix), (False, (0.4, 0.45, 0.15))):
        group = [d for d in docs if d["tagged"] == tagged]
        for kind, want in zip(corpus.KINDS, mix):
            got = sum(d["kind"] == kind for d in group) / len(group)
            assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / len(group)), (tagged, kind, got, want)
    with pytest.raises(ValueError, match="tagged_mix"):
        CorpusConfig(tagged_mix=(1.0, 0.0))


def test_every_document_is_right_about_its_product():
    docs = take(CorpusConfig(self_check=0.5, mistake_rate=0.8), 1, 2000)
    for d in docs:
        a, b, text = d["a"], d["b"], d["text"]
        assert text.count(f"{a}*{b}=?") == 1
        final = re.findall(r"(?:A: |<answer> )(\d+)", text)
        assert final == [str(a * b)], text
        if d["kind"] == "worked":  # every step of a worked solution is true arithmetic
            for x, op, y, z in STEP.findall(text):
                assert int(z) == (int(x) * int(y) if op == "*" else int(x) + int(y)), text
        if "wait" in text:  # a caught slip: the first pass is wrong, the check right
            wrong = int(re.search(r"wait, (\d+) is wrong", text).group(1))
            assert wrong != a * b
            assert text.rstrip(" </answer>").endswith(str(a * b))


def test_tagged_documents_have_the_r1zero_shape():
    from r1zero.rewards.basic import extract_answer, is_formatted

    for d in take(CorpusConfig(tagged=1.0), 2, 300):
        prompt = f"User: {d['a']}*{d['b']}=? Assistant:"
        assert d["text"].startswith(prompt)
        completion = d["text"][len(prompt):]
        assert is_formatted(completion) == (d["kind"] != "direct")
        assert extract_answer(completion).strip() == str(d["a"] * d["b"])


def test_held_out_pairs_never_appear_and_difficulty_sets_the_digits():
    docs = take(CorpusConfig(digits=2), 0, 3000)
    assert not any(corpus.is_held_out(d["a"], d["b"]) for d in docs)
    assert all(10 <= d["a"] <= 99 and 10 <= d["b"] <= 99 for d in docs)
    held = sum(corpus.is_held_out(a, b) for a in range(10, 100) for b in range(10, 100))
    assert 0.04 < held / 8100 < 0.09  # about 1 in 16
    three = take(CorpusConfig(digits=3, direct=0, worked=1, self_check=0, tagged=0), 0, 50)
    for d in three:
        assert 100 <= d["a"] <= 999 and 100 <= d["b"] <= 999
        assert len(STEP.findall(d["text"])) == 2 * len(corpus.partial_products(d["a"], d["b"])) - 1


def test_pack_keeps_documents_whole_and_starts_rows_at_a_boundary():
    docs = [[5] * n for n in (3, 4, 6, 2, 7, 1, 9)]
    tokens, mask = corpus.pack(iter(docs), rows=3, seq_len=10, eos_id=1, pad_id=0)
    rows = [list(t[m]) for t, m in zip(tokens, mask)]
    # Greedy: [3+1, 4+1] | [6+1, 2+1] | [7+1, 1+1]; the 9-token document no longer fits and is dropped.
    assert rows == [[5] * 3 + [1] + [5] * 4 + [1], [5] * 6 + [1] + [5] * 2 + [1], [5] * 7 + [1] + [5] + [1]]
    assert (tokens[~mask] == 0).all()
    with pytest.raises(ValueError, match="does not fit in seq_len 10"):
        corpus.pack(iter([[5] * 10]), rows=1, seq_len=10, eos_id=1, pad_id=0)


def test_bad_corpus_config_is_refused():
    with pytest.raises(ValueError, match="shares"):
        CorpusConfig(direct=-1)
    with pytest.raises(ValueError, match="tagged"):
        CorpusConfig(tagged=1.5)


# --- checks that can pay: casting out nines, a careful redo ------------------------------------------

NINES = CorpusConfig(digits=3, digits_b=2, direct=0, worked=0, self_check=1, tagged=0.5, mistake_rate=0.5,
                     check="nines", check_reliability=0.8, recheck=True, held_out_every=16)
SUM_STEP = re.compile(r"^(\d+(?:\+\d+)+)=(\d+)$")
MUL_STEP = re.compile(r"^(\d+)\*(\d+)=(\d+)$")


def parse_nines(doc: dict) -> dict:
    """The document's parts, parsed independently of corpus.py: the first answer, the check's steps
    and verdict, the redo's steps, the answer given."""
    text = doc["text"]
    answer = int(re.search(r"(?:<answer> |A: )(\d+)", text).group(1))
    work, _, rest = text.partition(" check: ")
    first = int(work.split("=")[-1])
    check, _, redo = rest.partition(" wait, ")
    tokens = check.replace("</think>", "").split()
    verdict_ok = "ok" in tokens[:tokens.index("ok") + 1] if "ok" in tokens and "not" not in tokens else False
    check_steps = [t for t in tokens if "=" in t]
    redo_steps = [t for t in redo.split(" check: ")[0].replace("</think>", "").split() if "=" in t]
    return {"first": first, "answer": answer, "ok": verdict_ok, "check_steps": check_steps, "redo_steps": redo_steps,
            "recheck": redo.split(" check: ")[1].split(" </think>")[0].split(" A:")[0] if " check: " in redo else None}


def step_is_right(step: str) -> bool:
    if m := SUM_STEP.match(step):
        return sum(int(x) for x in m.group(1).split("+")) == int(m.group(2))
    m = MUL_STEP.match(step)
    return int(m.group(1)) * int(m.group(2)) == int(m.group(3))


@pytest.mark.parametrize("first_pass", ["worked", "guess"])
def test_nines_checks_are_right_at_the_configured_rate_and_wrong_by_one_written_step(first_pass):
    docs = take(CorpusConfig(**{**NINES.__dict__, "first_pass": first_pass}), 0, 3000)
    parsed = [parse_nines(d) for d in docs]
    right = np.asarray([p["ok"] == (p["first"] == d["a"] * d["b"]) for d, p in zip(docs, parsed)])
    se = np.sqrt(0.8 * 0.2 / len(docs))
    assert abs(right.mean() - 0.8) < 4 * se
    slips = np.asarray([p["first"] != d["a"] * d["b"] for d, p in zip(docs, parsed)])
    assert abs(slips.mean() - 0.5) < 4 * np.sqrt(0.25 / len(docs))
    for ok, p in zip(right, parsed):
        wrong_steps = sum(not step_is_right(s) for s in p["check_steps"] if not s.startswith(str(p["first"]) + "="))
        assert wrong_steps == (0 if ok else 1), p


def test_rejected_answers_are_redone_right_and_accepted_ones_are_given():
    for d in take(NINES, 1, 1500):
        p = parse_nines(d)
        product = d["a"] * d["b"]
        if p["ok"]:  # accepted (a miss gives the wrong first answer: the corpus is honest about it)
            assert p["answer"] == p["first"] and not p["redo_steps"]
        else:
            assert p["answer"] == product and all(step_is_right(s) for s in p["redo_steps"])
            assert int(p["redo_steps"][-1].split("=")[1]) == product
            assert p["recheck"] is not None and p["recheck"].split()[-1] == "ok"


def test_nines_slips_are_all_caught_by_a_reliable_check():
    config = CorpusConfig(**{**NINES.__dict__, "check_reliability": 1.0, "mistake_rate": 1.0})
    for d in take(config, 2, 500):
        p = parse_nines(d)
        assert p["first"] != d["a"] * d["b"] and not p["ok"] and p["answer"] == d["a"] * d["b"]


def test_two_factor_sizes_and_held_out_pairs():
    docs = take(NINES, 3, 2000)
    assert all(100 <= d["a"] <= 999 and 10 <= d["b"] <= 99 for d in docs)
    assert not any(corpus.is_held_out(d["a"], d["b"]) for d in docs)


def test_the_aha_corpus_is_the_stream_base_aha_was_pretrained_on():
    # A regression pin: the hash of configs/pretrain_aha.py's first 2,000 documents (seed 0), the same
    # before and after first_pass existed; base_aha was pretrained on this stream.
    import hashlib
    from pathlib import Path

    from r1zero.config import load_config_file

    c = load_config_file(str(Path(__file__).parents[2] / "configs" / "pretrain_aha.py")).corpus
    text = "\n".join(d["text"] for d in take(c, 0, 2000))
    assert hashlib.sha256(text.encode()).hexdigest() == "2aa04cebb749dc251a93a16fce9400b72a960c2e5935f823b78440deadb2ccd1"


def test_the_self_check_detector_reads_the_corpus_as_written():
    from r1zero.metrics import self_check

    for d in take(NINES, 4, 1000):
        p, c = parse_nines(d), self_check(d["text"], str(d["a"] * d["b"]))
        assert (c.first, c.final, c.rejected) == (p["first"], p["answer"], not p["ok"])
        first_right = p["first"] == d["a"] * d["b"]
        want = "accepted" if p["ok"] else "kept" if first_right else "wrong->right"
        assert c.event == want


GUESS = CorpusConfig(**{**NINES.__dict__, "check_reliability": 1.0, "first_pass": "guess"})


def test_a_guessed_first_pass_states_the_product_at_once_and_slips_by_a_near_miss():
    docs = take(GUESS, 5, 2000)
    slipped = []
    for d in docs:
        product, p = d["a"] * d["b"], parse_nines(d)
        work = d["text"].partition(" check: ")[0]
        assert work.endswith(f" {d['a']}*{d['b']}={p['first']}") and work.count("=") == 2  # "=?" and the guess
        slipped.append(p["first"] != product)
        if p["first"] != product:  # one nonzero digit (not 9) off at one place below the leading one
            error = abs(p["first"] - product)
            place = 10 ** (len(str(error)) - 1)
            assert error % place == 0 and 1 <= error // place <= 8 and error % 9 and p["first"] > 0
            assert error < 10 ** (len(str(product)) - 1)
            assert not p["ok"] and p["answer"] == product and all(step_is_right(s) for s in p["redo_steps"])
        else:
            assert p["ok"] and p["answer"] == product
    assert abs(np.mean(slipped) - 0.5) < 4 * np.sqrt(0.25 / len(docs))


def test_a_guessed_first_pass_is_read_by_the_self_check_detector():
    from r1zero.metrics import self_check

    for d in take(GUESS, 6, 500):
        p, c = parse_nines(d), self_check(d["text"], str(d["a"] * d["b"]))
        assert (c.first, c.final, c.event) == (p["first"], p["answer"], "accepted" if p["ok"] else "wrong->right")
        assert c.arithmetic_right


def test_bad_check_options_are_named():
    from r1zero.errors import UserError

    with pytest.raises(UserError, match="corpus.check"):
        CorpusConfig(check="triple")
    with pytest.raises(UserError, match="corpus.check must be nines for check_reliability"):
        CorpusConfig(check_reliability=0.5)
    with pytest.raises(UserError, match="corpus.check_reliability"):
        CorpusConfig(check="nines", check_reliability=1.5)
    with pytest.raises(UserError, match="corpus.first_pass"):
        CorpusConfig(check="nines", first_pass="memory")
    with pytest.raises(UserError, match="corpus.check must be nines for first_pass=guess"):
        CorpusConfig(first_pass="guess")
