"""Secrets out of every message the product logs or raises.

Servers echo credentials (a 401 whose body repeats the Authorization header), and client
libraries put response bodies into their exception text. Every API key the product is configured
with, however it was given (str, `SecretStr`, environment), is registered here when it is resolved;
`redact` masks all of them in a text, and `redacted` gives an exception whose message is safe to
log, show or re-raise.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from rerank_prod.errors import ScorerError

MASK = "**********"
# Shorter "keys" would mask ordinary words in messages; real API keys are far longer.
_MIN_SECRET_CHARS = 4

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask `value` in every message from now on."""
    if len(value) >= _MIN_SECRET_CHARS:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by asterisks (longest first, so a key that
    contains another is masked whole)."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactedError(ScorerError):
    """A backend failure whose message held a secret: same message with the secret masked, and the
    HTTP status and requested retry wait (if any) of the original, which is not chained."""

    def __init__(self, message: str, *, kind: str, status_code: int | None, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code
        self.retry_after_s = retry_after_s


def redacted(failure: Exception) -> Exception:
    """`failure` itself if nothing in its message is secret, else a `RedactedError` (raise it
    `from None`: the original, secret included, must not travel on as its cause)."""
    message = f"{failure}"
    safe = redact(message)
    if safe == message and not any(redact(f"{link}") != f"{link}" for link in _chain(failure)):
        return failure
    status = getattr(failure, "status_code", None)
    retry_after = getattr(failure, "retry_after_s", None)
    return RedactedError(
        f"{type(failure).__name__}: {safe}",
        kind=type(failure).__name__,
        status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
        retry_after_s=float(retry_after) if isinstance(retry_after, (int, float)) else None,
    )


def _chain(failure: BaseException) -> list[BaseException]:
    """The exceptions `failure` was raised from or during (bounded: chains can loop)."""
    links: list[BaseException] = []
    link = failure.__cause__ or failure.__context__
    while link is not None and link not in links and len(links) < 20:
        links.append(link)
        link = link.__cause__ or link.__context__
    return links


@contextlib.contextmanager
def masking_secrets() -> Iterator[None]:
    """Around a backend call: a failure whose message (or cause) holds a secret is re-raised as
    its `redacted` form, unchained."""
    try:
        yield
    except Exception as failure:
        safe = redacted(failure)
        if safe is failure:
            raise
        raise safe from None
