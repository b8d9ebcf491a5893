"""Operator sign-in for the request endpoints: tokens from the environment, kept as SHA-256 digests."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from aiobligations.errors import ConfigurationError

__all__ = ["MIN_TOKEN_LENGTH", "OPERATOR_TOKENS_ENV", "load_operator_tokens", "token_digest"]

OPERATOR_TOKENS_ENV = "AIOBLIGATIONS_OPERATOR_TOKENS"
"""The default environment variable holding the operator tokens, as ``id1:token1,id2:token2``."""

MIN_TOKEN_LENGTH = 16
"""The shortest operator token :func:`load_operator_tokens` accepts."""


def token_digest(token: str) -> str:
    """The SHA-256 hex digest of an operator token (what :class:`RequestEndpoints` keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_operator_tokens(environ: Mapping[str, str] = os.environ,
                         variable: str = OPERATOR_TOKENS_ENV) -> dict[str, str]:
    """
    Read operator tokens from an environment variable, as ``{sha256_hex(token): operator_id}``.

    The value is ``id1:token1,id2:token2`` (spaces around entries are ignored; a token may contain
    ``:`` but not ``,``). An unset or blank variable gives ``{}`` (no operator can sign in).

    Raises:
        ConfigurationError: The value is malformed (an entry without ``:``, an empty or spaced id, a
            token shorter than :data:`MIN_TOKEN_LENGTH` or with spaces, a repeated id or token). The
            message names the variable and the entry's position, never the value.

    .. versionadded:: 0.1.0
    """
    raw = environ.get(variable)
    if raw is None or not raw.strip():
        return {}
    tokens: dict[str, str] = {}
    seen: set[str] = set()
    for position, entry in enumerate(raw.split(","), start=1):
        operator, sep, token = entry.strip().partition(":")
        problem = None
        if not sep or not operator or not token:
            problem = "is not id:token"
        elif any(c.isspace() for c in operator) or any(c.isspace() for c in token):
            problem = "contains whitespace"
        elif len(token) < MIN_TOKEN_LENGTH:
            problem = f"has a token shorter than {MIN_TOKEN_LENGTH} characters"
        elif operator in seen:
            problem = "repeats an operator id"
        else:
            digest = token_digest(token)
            if digest in tokens:
                problem = "repeats a token"
        if problem is not None:
            raise ConfigurationError(
                f"environment variable {variable} is malformed: entry {position} {problem} "
                "(expected id1:token1,id2:token2)"
            )
        seen.add(operator)
        tokens[digest] = operator
    return tokens
