"""Real weights, checked: GGUF files converted by `r1zero convert` against transformers.

    pip install -e '.[models]'
    python -m r1zero.bench.real_models FILE.gguf [FILE.gguf ...] [--tokens 256] [--greedy 64]

For each file: convert it (r1zero.models.gguf), then on the converted directory compare r1zero's
logits with transformers' over an ordinary English text (max |difference|, top-1 agreement), greedy
continuations token by token against transformers' `generate`, the negative log-likelihood of the
text (a broken conversion cannot reach a low value), and r1zero's token ids against transformers'
own reading of the GGUF file's tokenizer. Prints a table and one JSON line per model. Run by hand;
not a test (it needs real files, which CI does not have).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

TEXT = (
    "Paris is the capital and largest city of France. With an estimated population of more than two "
    "million residents, it is the centre of the Ile-de-France region and one of the most important cities "
    "in Europe. Since the seventeenth century it has been one of the world's major centres of finance, "
    "diplomacy, commerce, culture, fashion and gastronomy. The city is known for its museums and "
    "architectural landmarks: the Louvre received nearly nine million visitors in 2023, making it the "
    "most-visited art museum in the world. Once upon a time, there was a little girl named Lily. She "
    "loved to play outside in the sunshine. One day, she saw a big red ball in the park. She ran to the "
    "ball and kicked it as hard as she could, and it flew over the fence into the garden next door."
)
PROMPTS = ["The three primary colours are", "def fibonacci(n):", "Question: What is 12 * 7?\nAnswer:"]


def check(gguf_path: Path, tokens: int, greedy: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    from r1zero.config import SamplingConfig
    from r1zero.models import hf, per_token_logprobs, positions_from_mask
    from r1zero.models.gguf import convert_gguf
    from r1zero.sampler import sample
    from r1zero.tokenizer import Tokenizer

    out = Path(tempfile.mkdtemp(prefix="r1zero-gguf-"))
    t0 = time.perf_counter()
    summary = convert_gguf(gguf_path, out)
    row = {"file": gguf_path.name, "architecture": summary["architecture"], "parameters": summary["parameters"],
           "types": summary["tensor_types"], "convert_s": round(time.perf_counter() - t0, 1)}
    tok = Tokenizer(out)
    ids = tok.encode(TEXT)[:tokens]
    reference_tok = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    row["token_ids_equal"] = reference_tok(TEXT)["input_ids"][:tokens] == ids
    model, _ = hf.load_model(out)
    x, mask = jnp.asarray([ids]), jnp.ones((1, len(ids)), bool)
    ours = np.asarray(model(x, positions_from_mask(mask), mask)[0][0])
    theirs_model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = theirs_model(torch.tensor([ids])).logits[0].numpy()
    row["tokens"] = len(ids)
    row["max_abs_logit_diff"] = float(np.abs(ours - theirs).max())
    row["top1_agreement"] = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
    window = model.config.sliding_window if any(model.config.sliding_layers) else None
    if window:  # past the window of the sliding layers: the text again and again, window + 128 tokens
        long_ids = tok.encode(" ".join([TEXT] * (window // len(ids) + 2)))[:window + 128]
        xl, ml = jnp.asarray([long_ids]), jnp.ones((1, len(long_ids)), bool)
        ours_l = np.asarray(model(xl, positions_from_mask(ml), ml)[0][0])
        with torch.no_grad():
            theirs_l = theirs_model(torch.tensor([long_ids])).logits[0].numpy()
        row["past_window"] = (f"{len(long_ids)} tokens (window {window}): max diff {np.abs(ours_l - theirs_l).max():.2g}, "
                              f"top-1 {(ours_l.argmax(-1) == theirs_l.argmax(-1)).mean():.3f}")
    logp, _ = per_token_logprobs(model, x, mask)
    row["nll_nats_per_token"] = round(-float(np.asarray(logp)[0, 1:].mean()), 3)
    config = SamplingConfig(temperature=0.0, max_new_tokens=greedy, max_prompt_len=64)
    same = []  # per prompt: "agreeing leading tokens / tokens transformers generated (fewer: it stopped at EOS)"
    for prompt in PROMPTS:
        mine = sample(model, [prompt], jax.random.key(0), config, tok)
        produced = mine.completion_tokens[0][mine.completion_mask[0]].tolist()
        prompt_ids = tok.encode(prompt)
        with torch.no_grad():
            gen = theirs_model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=greedy,
                                        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long))
        reference = gen[0, len(prompt_ids):].tolist()
        agree = next((i for i, (a, b) in enumerate(zip(produced, reference)) if a != b), min(len(produced), len(reference)))
        same.append(f"{agree}/{len(reference)}")
    row["greedy_equal"] = ", ".join(same)
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--tokens", type=int, default=256, help="tokens of the English text compared")
    p.add_argument("--greedy", type=int, default=64, help="greedy tokens compared per prompt")
    args = p.parse_args(argv)
    rows = []
    for f in args.files:
        rows.append(check(f, args.tokens, args.greedy))
        print(json.dumps(rows[-1]), flush=True)
    head = ["file", "architecture", "parameters", "tokens", "max_abs_logit_diff", "top1_agreement",
            "nll_nats_per_token", "greedy_equal", "token_ids_equal", "past_window", "convert_s"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(r.get(h, "-")) for h in head))


if __name__ == "__main__":
    main()
