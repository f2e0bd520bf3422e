"""Who may call: anyone who can open the Unix socket (its file mode, 0660, decides), and over TCP
only a caller that sends the configured bearer token (``authorization: Bearer <token>``),
compared in constant time. Health checks and reflection are separate services and carry no data:
they answer without a token."""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

from agent.device_api.errors import ServerError

MIN_TOKEN_CHARS = 16


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace removed); ``ServerError`` naming the file
    when it cannot be read or is shorter than 16 characters."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerError(f"device API token file {path} cannot be read: {exc}") from exc
    if len(token) < MIN_TOKEN_CHARS:
        raise ServerError(f"device API token in {path} is shorter than {MIN_TOKEN_CHARS} characters")
    return token


def is_local(context: grpc.ServicerContext) -> bool:
    """Whether the call came over the Unix socket."""
    return context.peer().startswith("unix:")


class Authoriser:
    """Checks each call; ``token`` ``None`` means TCP is not served and only local calls exist."""

    def __init__(self, token: str | None) -> None:
        self._expected = f"Bearer {token}".encode() if token is not None else None

    def check(self, context: grpc.ServicerContext) -> None:
        """Return if the call may proceed; otherwise abort it with UNAUTHENTICATED."""
        if is_local(context):
            return
        given = next((v for k, v in context.invocation_metadata() if k == "authorization"), None)
        if isinstance(given, str) and self._expected is not None:
            if hmac.compare_digest(given.encode(), self._expected):
                return
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid")
        context.abort(
            grpc.StatusCode.UNAUTHENTICATED, "send the device API token as 'authorization: Bearer <token>'"
        )
