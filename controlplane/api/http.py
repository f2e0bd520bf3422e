"""HTTP conventions shared by the routes: pagination, ETag / If-Match, names in paths."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Generic, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Path, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from controlplane.api.problems import Problem

T = TypeVar("T")

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Names of models, workflows, threshold sets, groups, policies, devices: no slashes, no
leading dot, so a name can never walk out of a directory or a URL segment."""

NamePath = Annotated[str, Path(pattern=NAME_PATTERN, max_length=128)]
VersionPath = Annotated[int, Path(ge=1, le=2**31 - 1)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class PageParams:
    """``?limit=&cursor=``; build it with the ``page_params`` dependency."""

    def __init__(self, limit: int = 100, cursor: str | None = None) -> None:
        self.limit = limit
        self.cursor = cursor

    def after(self) -> list[Any] | None:
        if self.cursor is None:
            return None
        try:
            values = json.loads(base64.urlsafe_b64decode(self.cursor.encode()))
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise Problem(400, "query.cursor: not a cursor returned by this API", type="bad-cursor") from exc
        if not isinstance(values, list):
            raise Problem(400, "query.cursor: not a cursor returned by this API", type="bad-cursor")
        return values


async def page_params(
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor from the previous page.")
    ] = None,
) -> PageParams:
    return PageParams(limit, cursor)


PageDep = Annotated[PageParams, Depends(page_params)]


def paginate(
    conn: Connection,
    query: sa.Select[Any],
    keys: Sequence[sa.ColumnElement[Any]],
    params: PageParams,
    convert: Callable[[Mapping[Any, Any]], T],
    *,
    descending: bool = False,
) -> Page[T]:
    """Keyset pagination over ``keys`` (which must be unique together), ascending or descending."""
    after = params.after()
    if after is not None:
        if len(after) != len(keys):
            raise Problem(400, "query.cursor: not a cursor for this list", type="bad-cursor")
        position = sa.tuple_(*keys)
        query = query.where(position < sa.tuple_(*after) if descending else position > sa.tuple_(*after))
    order = [key.desc() for key in keys] if descending else list(keys)
    rows = conn.execute(query.order_by(*order).limit(params.limit + 1)).mappings().all()
    items = [convert(row) for row in rows[: params.limit]]
    next_cursor = None
    if len(rows) > params.limit:
        last = rows[params.limit - 1]
        next_cursor = encode_cursor([last[str(key.key)] for key in keys])
    return Page(items=items, next_cursor=next_cursor)


def label_query(items: list[str] | None) -> dict[str, str]:
    """``?label=k=v`` (repeatable) as a dict; 400 naming the item that is not key=value."""
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or len(key) > 63 or len(value) > 128:
            raise Problem(400, f"query.label: '{item}' is not key=value", type="validation")
        labels[key] = value
    return labels


def encode_cursor(key_values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key_values).encode()).decode()


def json_response(model: BaseModel, *, headers: Mapping[str, str] | None = None) -> Response:
    """Serialise a response model once (pydantic-core) and skip FastAPI's second validation
    pass over it: for hot read routes, whose ``response_model`` still documents the shape."""
    return Response(model.model_dump_json(), media_type="application/json", headers=dict(headers or {}))


def etag(revision: int) -> str:
    return f'"{revision}"'


def set_etag(response: Response, revision: int) -> None:
    response.headers["ETag"] = etag(revision)


def require_if_match(request: Request, revision: int) -> None:
    """Refuse an update unless the caller proves it saw the current revision."""
    header = request.headers.get("if-match")
    if header is None:
        raise Problem(
            428,
            "send If-Match with the ETag from your last read, so concurrent changes are not overwritten",
            type="precondition-required",
        )
    wanted = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    if "*" not in wanted and etag(revision) not in wanted:
        raise Problem(
            412,
            f"the resource changed since you read it (now {etag(revision)}); read it again and retry",
            type="precondition-failed",
            headers={"ETag": etag(revision)},
        )
