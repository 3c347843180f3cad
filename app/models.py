"""Database rows (SQLAlchemy 2.0). Wire shapes live in `schemas/`; these are the records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way in and out; SQLite would otherwise hand back naive datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored; use timezone-aware UTC")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime, dict[str, str]: JSON}


class Upload(Base):
    """One upload, from ticket to promoted (or refused) media."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    visibility: Mapped[str] = mapped_column(String(8))

    declared_type: Mapped[str] = mapped_column(String(64))
    declared_size: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str | None] = mapped_column(String(255))
    context: Mapped[dict[str, str]] = mapped_column(default=dict)
    # Documents: the owner's document this upload is a version of, and (from promotion) its version number.
    document_id: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int | None] = mapped_column(Integer)
    temp_key: Mapped[str] = mapped_column(String(512))
    ticket_expires_at: Mapped[datetime]
    # A resumable upload: the store's multipart upload at `temp_key`, cut in parts of `part_size` bytes.
    multipart_upload_id: Mapped[str | None] = mapped_column(String(1024))
    part_size: Mapped[int | None] = mapped_column(BigInteger)

    # Filled by the event that reported the object.
    event_etag: Mapped[str | None] = mapped_column(String(128))

    # Filled on promotion: the main file. Its variants (a video's poster and 720p) are rows of their own.
    final_key: Mapped[str | None] = mapped_column(String(512))
    content_type: Mapped[str | None] = mapped_column(String(64))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    duration_seconds: Mapped[float | None] = mapped_column(Float)  # videos
    codecs: Mapped[str | None] = mapped_column(String(64))  # videos: "h264+aac"
    pages: Mapped[int | None] = mapped_column(Integer)  # documents
    variants: Mapped[list[Variant]] = relationship(
        lazy="selectin", order_by="Variant.name", cascade="all, delete-orphan"
    )

    # Set when the food-recognition job has finished with this image.
    ai_processed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # Filled on rejection / failure.
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(500))

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def object_keys(self) -> list[str]:
        """Every key this upload may have in the store: its variants, its main file, its temp object."""
        return [variant.key for variant in self.variants] + [
            key for key in (self.final_key, self.temp_key) if key
        ]

    __table_args__ = (
        Index("ix_uploads_owner_created", "owner_id", "created_at"),
        Index("ix_uploads_status_updated", "status", "updated_at"),
        Index("ix_uploads_owner_document", "owner_id", "document_id"),
    )


class Variant(Base):
    """A file made from an upload beside its main file (a video's `poster` and `720p`), stored at its own key."""

    __tablename__ = "upload_variants"

    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))


class DocumentCounter(Base):
    """The last version number handed out for one owner's document: versions are allocated here, one
    conditional upsert at a time, so two uploads of the same document never get the same number."""

    __tablename__ = "document_versions"

    owner_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)


class Grant(Base):
    """The owner lets `viewer_id` see their private media (the seed's friend / trainer rule)."""

    __tablename__ = "grants"

    owner_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    viewer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    relation: Mapped[str] = mapped_column(String(16))  # "friend" or "trainer"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_grants_viewer", "viewer_id"),)
