"""Where a base model comes from, decided before anything slow: a local directory, the tiny
aliases, the Hugging Face cache, or one short request to the hub; and the checkpoint's family
from its config.json alone. Every failure is a one-line UserError saying what to do.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from visualrft_lite.errors import UserError
from visualrft_lite.modeling.families import Family, UnsupportedModel, family_of
from visualrft_lite.modeling.tiny import TINY_ALIASES
from visualrft_lite.modeling.tiny_families import FAMILY_ALIASES

HUB_PROBE_TIMEOUT_S = 10.0
"""One request, no retries: long enough for a slow link, short enough to fail fast."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")
"""`org/name` or a bare `name`; anything else that does not exist is a missing local directory."""


@dataclass(frozen=True)
class ModelSource:
    """Where a base model will be read from, decided before anything slow happens."""

    name: str
    """What to pass to from_pretrained: a local directory or a hub id."""
    where: Literal["local", "cache", "hub"]
    """A directory on disk; a hub id already in the Hugging Face cache (loaded without asking
    the hub); a hub id the hub just answered for (downloaded on load)."""
    cache_dir: str | None = None


def resolve_model_name(name: str) -> str:
    """Hub id or local directory; the tiny alias builds (once) and returns the local model."""
    if name in TINY_ALIASES:
        from visualrft_lite.modeling.tiny import ensure_tiny_model

        return str(ensure_tiny_model())
    if name in FAMILY_ALIASES:
        from visualrft_lite.modeling.tiny_families import ensure_tiny_family

        return str(ensure_tiny_family(FAMILY_ALIASES[name]))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UserError(f"model directory {name} has no config.json; point model.name at a saved model")
        return str(path)
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise UserError(f"model directory {name} not found (model.name); pass a saved model's directory "
                        f"or a hub id like Qwen/Qwen2-VL-2B-Instruct")
    return name


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), as set now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    return _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE") or constants.is_offline_mode()


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


_FIX = "set HF_HUB_OFFLINE=1 to use only the local cache, or point model.name at a local directory"


def check_model_available(name: str) -> ModelSource:
    """Can `name` be loaded? Answers in at most one short hub request, before anything slow.

    A local directory (or the tiny alias) is checked on disk; a hub id is looked up in the
    Hugging Face cache first; only a hub id missing from the cache asks the hub, once, with
    a short timeout and no retries. Every failure is a one-line UserError saying what to do
    (HF_HUB_OFFLINE=1 with a cached copy, or a local directory).
    """
    resolved = resolve_model_name(name)
    if resolved != name or Path(resolved).expanduser().is_dir():
        return ModelSource(resolved, "local")
    from huggingface_hub import try_to_load_from_cache

    cache_dir = hub_cache_dir()
    if isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache_dir), str):
        return ModelSource(name, "cache", cache_dir)
    if hub_offline():
        raise UserError(f"model {name!r} is not in the Hugging Face cache ({cache_dir}) and HF_HUB_OFFLINE=1 is set; "
                        f"download it once with network access (hf download {name}), or point model.name at a "
                        f"local directory")
    probe_hub(name)
    return ModelSource(name, "hub", cache_dir)


def probe_hub(name: str) -> None:
    """One HEAD request for the model's config.json: a one-line UserError unless the hub has it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    endpoint = hub_endpoint()
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json", endpoint=endpoint), timeout=HUB_PROBE_TIMEOUT_S,
                             retry_on_errors=False)
    except GatedRepoError:
        raise UserError(f"model {name!r} is gated: accept its licence on {endpoint}/{name} and log in "
                        f"(hf auth login), or point model.name at a local directory") from None
    except RepositoryNotFoundError:
        raise UserError(f"model {name!r} not found on {endpoint} (check model.name; a private model needs "
                        f"hf auth login), or point model.name at a local directory") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if getattr(e, "response", None) is not None else "an error"
        raise UserError(f"the hub at {endpoint} answered {status} for {name}/config.json; {_FIX}") from None
    except Exception as e:  # noqa: BLE001 - connection refused, DNS, timeout, TLS: all mean "unreachable"
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120] or type(e).__name__
        raise UserError(f"cannot reach the Hugging Face hub at {endpoint} to fetch {name!r} ({reason}); {_FIX}") from None


def checkpoint_model_type(source: ModelSource) -> str | None:
    """The model_type in the checkpoint's config.json (one small file; no weights read)."""
    if source.where == "local":
        path: str | None = str(Path(source.name) / "config.json")
    else:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        found = try_to_load_from_cache(source.name, "config.json", cache_dir=source.cache_dir)
        path = found if isinstance(found, str) else None
        if path is None and not hub_offline():
            try:
                path = hf_hub_download(source.name, "config.json", cache_dir=source.cache_dir)
            except Exception:  # noqa: BLE001 - the load itself will say what is wrong
                path = None
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def checkpoint_family(source: ModelSource) -> Family:
    """The supported family of a checkpoint; a one-line UserError for any other model_type."""
    try:
        return family_of(checkpoint_model_type(source))
    except UnsupportedModel as e:
        raise UserError(f"{source.name}: {e}") from None
