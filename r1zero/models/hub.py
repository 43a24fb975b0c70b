"""Where a model's files are: a local directory, or a Hugging Face Hub id (`Qwen/Qwen2.5-0.5B`,
optionally `@revision`) resolved to a snapshot in the Hub cache by `huggingface_hub.snapshot_download`.

Only the files r1zero reads are fetched (config, safetensors, tokenizer files). The cache and
offline mode are huggingface_hub's own: HF_HOME / HF_HUB_CACHE choose the cache, HF_HUB_OFFLINE=1
reads it without any network call."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from r1zero.errors import MissingFileError, UserError

# What load_model and Tokenizer read (model*.safetensors: not the duplicate consolidated.safetensors
# some repositories carry beside them).
HUB_FILES = ["config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
             "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
             "chat_template.jinja"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_REVISION = re.compile(r"[\w.\-/]{1,200}")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    path: Path  # a local directory holding config.json, the safetensors and the tokenizer files
    repo_id: str | None = None  # the Hub id, when it came from the Hub
    revision: str | None = None  # the commit of that snapshot

    def record(self, spec: str) -> dict:
        """What a run directory keeps (model_source.json) to load the very same files again."""
        return {"model_dir": spec, "path": str(self.path), "repo_id": self.repo_id, "revision": self.revision}


def is_hub_id(spec: str) -> bool:
    """`org/name` or `org/name@revision` that is not an existing local path."""
    name = spec.split("@", 1)[0]
    return bool(_HUB_ID.fullmatch(name)) and not Path(spec).exists() and ".." not in name


def resolve(spec: str | Path, revision: str | None = None) -> ModelSource:
    """The local directory `spec` names, or the Hub snapshot of `spec` = `org/name[@revision]`
    (`revision`, when given, pins it: e.g. the commit a run recorded). A commit already in the
    cache is read without any network call. Errors name the id, the revision and the cache."""
    spec = str(spec)
    if not is_hub_id(spec):
        path = Path(spec).expanduser()
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise MissingFileError(f"model directory {spec} {what} (nor is it a Hub id like org/name[@revision])")
        return ModelSource(path)
    repo_id, _, rev = spec.partition("@")
    rev = revision or rev or None
    if rev is not None and (not isinstance(rev, str) or not _REVISION.fullmatch(rev) or ".." in rev):
        raise UserError(f"model_dir {spec}: {rev!r} is not a revision (a branch, tag or commit)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_id}" + (f" at revision {rev}" if rev else "")
    cached_commit = rev is not None and re.fullmatch(r"[0-9a-f]{40}", rev) is not None
    fetch = lambda local: Path(snapshot_download(repo_id, revision=rev, allow_patterns=HUB_FILES,
                                                 local_files_only=local))
    try:
        try:
            path = fetch(cached_commit)  # a commit in the cache never changes: no network call
        except LocalEntryNotFoundError:
            if not cached_commit or constants.HF_HUB_OFFLINE:
                raise
            path = fetch(False)
    except RevisionNotFoundError:
        raise UserError(f"model_dir {spec}: the Hub has no revision {rev!r} of {repo_id}") from None
    except RepositoryNotFoundError:
        raise UserError(f"model_dir {spec}: no such repository on the Hub (or it is private/gated and no "
                        f"token is set: huggingface-cli login or HF_TOKEN)") from None
    except LocalEntryNotFoundError:
        offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise MissingFileError(f"model_dir {spec}: {where} is not in the Hugging Face cache {constants.HF_HUB_CACHE} "
                               f"and {offline}; download it there on a machine that can reach the Hub "
                               f"(huggingface-cli download {repo_id}), or pass a local directory") from None
    except HFValidationError as e:
        raise UserError(f"model_dir {spec}: not a valid Hub id ({e})") from None
    except HfHubHTTPError as e:
        raise UserError(f"model_dir {spec}: the Hub refused {where}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"model_dir {spec}: the Hugging Face cache {constants.HF_HUB_CACHE} is damaged or unreadable "
                        f"for {where} ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - network errors of whichever HTTP client huggingface_hub uses
        if type(e).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore", "requests", "urllib3"):
            raise
        raise UserError(f"model_dir {spec}: could not reach the Hub for {where} ({type(e).__name__}: {e}); "
                        f"set HF_HUB_OFFLINE=1 to use the cache only") from None
    if not (path / "config.json").is_file():
        raise MissingFileError(f"model_dir {spec}: the snapshot {path} has no config.json "
                               f"(not a transformers model, or an incomplete download)")
    return ModelSource(path, repo_id, path.name)  # the cache names each snapshot by its commit
