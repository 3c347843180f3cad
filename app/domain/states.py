"""The upload state machine.

Every change of state is a conditional update ("move to X only from one of these states"), so the same
event twice, a retried job, or events out of order can never apply a transition twice.
"""

from __future__ import annotations

from enum import StrEnum


class UploadStatus(StrEnum):
    PENDING = "pending"  # ticket issued, nothing stored yet
    UPLOADED = "uploaded"  # the store reported the object; a job is queued
    PROCESSING = "processing"  # a worker is validating / transforming it
    READY = "ready"  # promoted; media can be served
    REJECTED = "rejected"  # the content was refused (final)
    FAILED = "failed"  # transient errors exhausted retries; ops may retry
    EXPIRED = "expired"  # ticket expired with no object
    DELETED = "deleted"  # owner removed it
    SUPERSEDED = "superseded"  # an avatar replaced by a newer one: object deleted, record kept


S = UploadStatus

# target state -> the states it may be reached from
_SOURCES: dict[UploadStatus, frozenset[UploadStatus]] = {
    # A late event for an expired ticket still counts: the object exists.
    S.UPLOADED: frozenset({S.PENDING, S.EXPIRED}),
    # `processing` again covers an RQ retry of the same job; `failed` covers an ops retry.
    S.PROCESSING: frozenset({S.UPLOADED, S.PROCESSING, S.FAILED}),
    S.READY: frozenset({S.PROCESSING}),
    S.REJECTED: frozenset({S.UPLOADED, S.PROCESSING}),
    S.FAILED: frozenset({S.UPLOADED, S.PROCESSING}),
    S.EXPIRED: frozenset({S.PENDING}),
    # Deleting a pending upload cancels its ticket; a later event then finds nothing to do.
    S.DELETED: frozenset({S.PENDING, S.READY, S.REJECTED, S.FAILED, S.EXPIRED, S.SUPERSEDED}),
    S.SUPERSEDED: frozenset({S.READY}),
    # Only used to undo `uploaded` when the job could not be queued, so the sender's retry is not ignored.
    S.PENDING: frozenset({S.UPLOADED}),
}

TERMINAL = frozenset({S.READY, S.REJECTED, S.DELETED, S.SUPERSEDED})


def sources_of(target: UploadStatus) -> frozenset[UploadStatus]:
    """The states from which `target` may be entered."""
    return _SOURCES[target]


def can_move(current: UploadStatus, target: UploadStatus) -> bool:
    return current in _SOURCES[target]
