"""The broker's collaborators, built once per process from settings and shared by API and workers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from redis import Redis
from rq import Queue

from app.auth import TokenVerifier
from app.config import Settings
from app.db import Database
from app.events.sns import SnsTrust, SnsVerifier
from app.queueing import processing_queues, redis_connection, upload_queue
from app.storage import Storage
from app.ticket_rows import TicketRows

if TYPE_CHECKING:
    from app.metrics import PendingCounts


@dataclass
class Services:
    settings: Settings

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.database_url)

    @cached_property
    def ticket_rows(self) -> TicketRows:
        return TicketRows(self.db.engine)

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings)

    @cached_property
    def redis(self) -> Redis:
        return redis_connection(self.settings)

    @cached_property
    def queue(self) -> Queue:
        return upload_queue(self.settings, self.redis)

    @cached_property
    def processing_queues(self) -> list[Queue]:
        """Every processing queue, images first: the order a worker listening to all of them takes jobs."""
        return [
            Queue(target.name, connection=self.redis) for target in processing_queues(self.settings).values()
        ]

    @cached_property
    def pending_metrics(self) -> PendingCounts:
        from app.metrics import PendingCounts  # app.metrics reads the queues through app.ops, which needs us

        return PendingCounts(self)

    @cached_property
    def tokens(self) -> TokenVerifier:
        return TokenVerifier(self.settings)

    @cached_property
    def sns(self) -> SnsVerifier:
        """One per process, so fetched signing certificates are cached across requests."""
        s = self.settings
        return SnsVerifier(
            SnsTrust(
                cert_hosts=s.trusted_sns_cert_hosts,
                topic_arns=(s.sns_topic_arn,) if s.sns_topic_arn else (),
                cert_endpoint_url=s.sns_cert_endpoint_url,
                region=s.s3_region,
                ca_bundle=s.sns_ca_bundle,
            )
        )

    def close(self) -> None:
        """Deliver pending metrics; release database connections (tests and short-lived processes)."""
        if "pending_metrics" in self.__dict__:
            self.pending_metrics.stop()
        if "ticket_rows" in self.__dict__:
            self.ticket_rows.dispose()
        if "db" in self.__dict__:
            self.db.dispose()
