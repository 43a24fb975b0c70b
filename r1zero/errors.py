"""The one error type for what the user got wrong.

A `UserError` says that something the user gave is wrong (a config value, a file, a row of data) and
its message names it (the key, the file, the row). `r1zero` commands print it in one line and exit
with status 2. Every other exception is a bug or a failure of the system (out of memory, a compile
error, a shape mismatch inside JAX) and keeps its traceback.

Both subclass the built-in types callers already catch: `UserError` is a ValueError and
`MissingFileError` is also a FileNotFoundError.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad config, bad file or bad data; the message names which."""


class MissingFileError(FileNotFoundError, UserError):
    """A file or directory the user named (or that a run directory should hold) does not exist."""


def read_json(path) -> object:
    """The content of a JSON file the user gave (a model's config.json, a run's config.json, ...);
    unreadable or invalid JSON is a UserError naming the file."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise MissingFileError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
