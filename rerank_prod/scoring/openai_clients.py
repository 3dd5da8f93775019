"""The pair of official `openai` clients (sync and async) that OpenAI-backed scorers share."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from rerank_prod.scoring.bounded_http import DEFAULT_MAX_RESPONSE_BYTES, bounded_transports, check_max_response_bytes
from rerank_prod.scoring.dependencies import require_extra
from rerank_prod.scoring.remote import PerEventLoop, check_base_url, resolve_api_key

OPENAI_KEY_ENV_VARS = ("OPENAI_API_KEY",)
# Local OpenAI-compatible servers (vLLM, Ollama, llama.cpp) often need no key; the SDK insists on one.
_NO_KEY = "no-key"


def openai_clients(
    scorer: str,
    api_key: Any,
    base_url: str | None,
    request_timeout_s: float | None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> tuple[str | None, Any, PerEventLoop[Any]]:
    """(checked base_url, OpenAI, AsyncOpenAI per event loop), with the SDK's own retries off: ours
    respect the budget. Both send through `bounded_http` transports: `request_timeout_s` is the
    total time of a request, and answers above `max_response_bytes` are refused unread.

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
    limit = check_max_response_bytes(max_response_bytes)
    transport, async_transport = bounded_transports(_http_library(openai))
    client = openai.OpenAI(http_client=openai.DefaultHttpxClient(transport=transport(limit)), **settings)
    aclients = PerEventLoop(
        lambda: openai.AsyncOpenAI(
            http_client=openai.DefaultAsyncHttpxClient(transport=async_transport(limit)), **settings
        ),
        lambda client: client.close(),
    )
    return checked_url, client, aclients


def _http_library(openai: ModuleType) -> ModuleType:
    """The HTTP library the SDK's clients are built on: httpx in older releases, its fork httpx2
    (same API) in newer ones."""
    client_class = next(cls for cls in openai.DefaultHttpxClient.__mro__ if cls.__name__ == "Client")
    return sys.modules[client_class.__module__.partition(".")[0]]
