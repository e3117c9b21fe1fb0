"""URIs as they may be shown: in messages, logs, MLflow parameters and tags, reports.

A tracking URI, an Optuna storage URL or a database URL may carry a password
(``postgresql://user:secret@host/db``) or a secret in its query (``?password=...``,
``X-Amz-Signature=...``): :func:`redact` masks those, anywhere in a text, and leaves the rest of
the text as it was, so the URI still says which server and database it is.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
#: ``scheme://...`` up to whitespace, a quote or a closing bracket.
_URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
#: Query keys whose values are secrets (case-insensitive substrings).
_SECRET_KEYS = ("pass", "pwd", "secret", "token", "key", "signature", "sig", "credential", "auth")


def redact(text: str) -> str:
    """``text`` with the password of every URI in it and its secret query values masked (and
    the user part of an ``http(s)`` URI without a password, which is how tokens are passed)."""
    return _URI.sub(lambda match: _redact_uri(match.group(0)), text)


def _redact_uri(uri: str) -> str:
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # e.g. a port that is not a number: say nothing of the authority
        return re.sub(r"//[^/?#]*@", f"//{MASK}@", uri)
    netloc, query = parts.netloc, parts.query
    if password is not None:
        user = netloc.rpartition("@")[0].partition(":")[0]
        netloc = f"{user}:{MASK}@{netloc.rpartition('@')[2]}"
    elif "@" in netloc and parts.scheme in ("http", "https"):  # https://<token>@host
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_secret(key) for key, _ in pairs):
        masked = [(key, MASK if _secret(key) else value) for key, value in pairs]
        query = urlencode(masked, safe=MASK, quote_via=quote)
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # as written (urlunsplit would drop the empty authority of sqlite:////x)
    rest = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{rest}"


def _secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_KEYS)


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``(uri without user:password@, user, password)`` of an ``http(s)://`` URI with a
    password; other URIs (no password, or a database URL, whose driver needs it in place) come
    back unchanged with None, None."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.password is None:
        return uri, None, None
    host = parts.netloc.rpartition("@")[2]
    user = unquote(parts.username or "")
    return urlunsplit(parts._replace(netloc=host)), user, unquote(parts.password)
