"""Keyset pagination, the one way every list in openft is paged: never OFFSET."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Column, Connection, ScalarSelect, Select, Table, select

from openft.domain.entities import Page

T = TypeVar("T")


def key_of(table: Table, public_id: Any) -> ScalarSelect[Any]:
    """The internal key (`pk`) of the row with this public id, as a subquery: how
    statements refer to a row, and the cursor of a page, without a round trip."""
    return select(table.c.pk).where(table.c.id == public_id).scalar_subquery()


def keyset_page(
    conn: Connection,
    query: Select[Any],
    key: Column[Any],
    after: ScalarSelect[Any] | None,
    limit: int,
    descending: bool,
    convert: Callable[[Any], T],
) -> Page[T]:
    """Return up to `limit` rows of `query` past the row whose `key` is `after`.

    One extra row is fetched to tell, exactly, whether more remain.
    """
    if after is not None:
        query = query.where(key < after if descending else key > after)
    query = query.order_by(key.desc() if descending else key.asc()).limit(limit + 1)
    rows = conn.execute(query).all()
    return Page([convert(row) for row in rows[:limit]], has_more=len(rows) > limit)
