"""Tokenizer from a model directory's tokenizer.json (the `tokenizers` library), with the EOS, BOS
and pad ids real checkpoints declare in generation_config.json / config.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import tokenizers

from r1zero.errors import MissingFileError, UserError, read_json

# Special tokens of the character tokenizers r1zero writes (models it initialises or pretrains itself).
SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>", "<think>", "</think>", "<answer>", "</answer>")


def _ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)


class Tokenizer:
    """Text <-> token ids for one model directory."""

    def __init__(self, model_dir: str | os.PathLike):
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            where = "does not exist" if not model_dir.is_dir() else "has no tokenizer.json"
            raise MissingFileError(f"{model_dir} {where}: a tokenizer.json is needed to tokenize text")
        self.path = path
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad file
            raise UserError(f"{path}: not a readable tokenizer ({e})") from None
        meta: dict = {}
        for name in ("config.json", "generation_config.json"):  # generation_config wins
            if (model_dir / name).is_file():
                found = read_json(model_dir / name)
                if not isinstance(found, dict):
                    raise UserError(f"{model_dir / name}: not a JSON object")
                meta.update({k: v for k, v in found.items() if v is not None})
        self.eos_ids: tuple[int, ...] = _ids(meta.get("eos_token_id"))
        self.bos_id: int | None = meta.get("bos_token_id")
        pad = meta.get("pad_token_id")
        self.pad_id: int = int(pad) if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids; `add_special_tokens` applies the file's post-processor (e.g. Llama 3's BOS)."""
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def token_bytes(self) -> list[bytes]:
        """The UTF-8 bytes each token id stands for (used to match stop strings on device).

        Byte-level BPE tokens (Qwen, Llama 3, GPT-2) map back through the GPT-2 byte alphabet, so a
        token holding half of a multi-byte character gets exactly its bytes; added tokens
        (`<|endoftext|>`, `<think>`) are their literal text.
        """
        added = {i: t.content for i, t in self._tok.get_added_tokens_decoder().items()}
        byte_level = json.loads(self._tok.to_str()).get("decoder", {}) or {}
        byte_level = byte_level.get("type") == "ByteLevel"
        out = []
        for i in range(self.vocab_size):
            if i in added:
                out.append(added[i].encode("utf-8"))
                continue
            piece = self._tok.id_to_token(i) or ""
            if byte_level:
                out.append(bytes(_UNICODE_TO_BYTE.get(ch, 0) for ch in piece))
            elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # byte fallback
                out.append(bytes([int(piece[3:5], 16)]))
            else:  # SentencePiece-style pieces
                out.append(piece.replace("\u2581", " ").encode("utf-8"))
        return out


def _gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256+."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[chr(b)] = b
        else:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


_UNICODE_TO_BYTE = _gpt2_unicode_to_byte()


def write_char_tokenizer(out_dir: str | os.PathLike, chars: str,
                         special_tokens: tuple[str, ...] = ("<pad>", "<eos>", "<unk>", "<think>", "</think>"),
                         eos: str = "<eos>", pad: str = "<pad>") -> Tokenizer:
    """Writes a character-level tokenizer.json (each special token is one token) and a
    generation_config.json naming its EOS and pad ids, as a real model directory would have them."""
    from tokenizers import Regex, decoders, models, pre_tokenizers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(set(chars)) != len(chars):
        raise ValueError("chars must not repeat")
    vocab = {t: i for i, t in enumerate(list(special_tokens) + list(chars))}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>" if "<unk>" in vocab else None))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(special_tokens))
    tok.save(str(out / "tokenizer.json"))
    meta = {"eos_token_id": vocab[eos], "pad_token_id": vocab[pad]}
    (out / "generation_config.json").write_text(json.dumps(meta, indent=1) + "\n")
    return Tokenizer(out)
