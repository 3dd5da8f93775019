"""The pair of official `openai` clients (sync and async) that OpenAI-backed scorers share."""

from __future__ import annotations

import functools
from typing import Any

from rerank_prod.scoring.dependencies import require_extra
from rerank_prod.scoring.remote import PerEventLoop, check_base_url, resolve_api_key

OPENAI_KEY_ENV_VARS = ("OPENAI_API_KEY",)
# Local OpenAI-compatible servers (vLLM, Ollama, llama.cpp) often need no key; the SDK insists on one.
_NO_KEY = "no-key"


def openai_clients(
    scorer: str, api_key: Any, base_url: str | None, request_timeout_s: float | None
) -> tuple[str | None, Any, PerEventLoop[Any]]:
    """(checked base_url, OpenAI, AsyncOpenAI per event loop), with the SDK's own retries off: ours
    respect the budget.

    The key comes from `api_key` (str or `SecretStr`) or `OPENAI_API_KEY`; it may be omitted only
    with a `base_url`.
    """
    require_extra("openai", scorer, "openai")
    require_extra("tenacity", scorer, "openai")
    import openai

    checked_url = None if base_url is None else check_base_url(base_url)
    key = resolve_api_key(api_key, OPENAI_KEY_ENV_VARS)
    if key is None and checked_url is None:
        raise ValueError(
            f"{scorer} needs an API key: pass api_key=SecretStr(...) or set OPENAI_API_KEY "
            "(or a base_url for a local server without auth)"
        )
    settings: dict[str, Any] = {
        "api_key": key.reveal() if key is not None else _NO_KEY,
        "max_retries": 0,
        "timeout": request_timeout_s,
    }
    if checked_url is not None:
        settings["base_url"] = checked_url
    return checked_url, openai.OpenAI(**settings), PerEventLoop(functools.partial(openai.AsyncOpenAI, **settings))
