"""Bearer credentials: operator API tokens, device credentials and enrollment tokens.

A token reads ``ef<k>_<id>_<secret>`` (``k``: ``o`` operator, ``d`` device, ``e`` enrollment).
The id locates the row; only the sha256 of the 256-bit random secret is stored, so a leaked
database does not leak usable tokens. The full token is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

TokenKind = Literal["operator", "device", "enrollment"]
_PREFIX: dict[TokenKind, str] = {"operator": "efo", "device": "efd", "enrollment": "efe"}
_KIND = {prefix: kind for kind, prefix in _PREFIX.items()}


@dataclass(frozen=True)
class NewToken:
    kind: TokenKind
    id: str
    secret_hash: str
    token: str


@dataclass(frozen=True)
class ParsedToken:
    kind: TokenKind
    id: str
    secret: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(kind: TokenKind) -> NewToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewToken(kind, token_id, hash_secret(secret), f"{_PREFIX[kind]}_{token_id}_{secret}")


def parse_token(text: str) -> ParsedToken | None:
    """``None`` for anything that is not shaped like one of our tokens."""
    parts = text.split("_", 2)
    if len(parts) != 3 or parts[0] not in _KIND:
        return None
    prefix, token_id, secret = parts
    if len(token_id) != 16 or not all(c in "0123456789abcdef" for c in token_id) or not secret:
        return None
    return ParsedToken(_KIND[prefix], token_id, secret)


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)
