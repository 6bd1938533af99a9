"""Declarative base and shared column helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import Dialect, MetaData, String
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

E = TypeVar("E", bound=StrEnum)

# Stable constraint names so Alembic autogenerate compares equal on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now; a callable so each row gets its own timestamp."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class StrEnumColumn(TypeDecorator[E], Generic[E]):
    """A ``StrEnum`` stored as its plain string in a ``VARCHAR``.

    Not ``sqlalchemy.Enum``: that would add a native enum type (PostgreSQL) or a
    CHECK constraint and so a migration, while the strings stored are the same ones
    as before. Values read back are enum members, so ``Mapped[RunStatus]`` is true.
    The legal values are enforced where they are written (:mod:`edgelab.store`).
    """

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int = 16) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)
