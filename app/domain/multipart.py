"""Resumable uploads as S3 multipart uploads: how a declared size is cut into parts, and when the parts a
client reports make up exactly the file its ticket allowed. No I/O here.

S3's rules: parts of at least 5 MiB except the last, at most 10,000 parts. The broker fixes the part size in
the ticket, so every part's length is known in advance and each presigned part URL signs it: a client can
neither send more bytes than its ticket says nor put them anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3 refuses smaller parts (except the last) at completion
MAX_PARTS = 10_000
MAX_PART_URLS_PER_CALL = 100  # a client asks for a window of parts at a time, not 10,000 URLs at once


class MultipartRefusal(StrEnum):
    INVALID_REQUEST = "invalid_request"
    SIZE_MISMATCH = "size_mismatch"


class MultipartRefused(Exception):
    def __init__(self, code: MultipartRefusal, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def wants_multipart(size: int, resumable: bool, threshold: int) -> bool:
    """Multipart above the threshold, or when asked for; a file under one part has nothing to resume."""
    return size > threshold or (resumable and size >= MIN_PART_SIZE)


@dataclass(frozen=True)
class PartPlan:
    size: int  # the declared size of the whole file
    part_size: int

    @property
    def part_count(self) -> int:
        return -(-self.size // self.part_size)

    def part_length(self, number: int) -> int:
        """The exact length of part `number` (1-based): `part_size`, the last one the remainder."""
        if not 1 <= number <= self.part_count:
            raise MultipartRefused(
                MultipartRefusal.INVALID_REQUEST, f"part {number} is not one of 1-{self.part_count}"
            )
        return min(self.part_size, self.size - (number - 1) * self.part_size)


def plan_parts(size: int, preferred_part_size: int) -> PartPlan:
    """Parts of `preferred_part_size`, grown in whole MiB when the file would need more than 10,000."""
    part_size = max(preferred_part_size, MIN_PART_SIZE)
    if -(-size // part_size) > MAX_PARTS:
        smallest = -(-size // MAX_PARTS)
        part_size = -(-smallest // MiB) * MiB
    return PartPlan(size, part_size)


def check_part_numbers(plan: PartPlan, numbers: list[int]) -> list[int]:
    if not 1 <= len(numbers) <= MAX_PART_URLS_PER_CALL:
        raise MultipartRefused(
            MultipartRefusal.INVALID_REQUEST, f"ask for 1-{MAX_PART_URLS_PER_CALL} part numbers at a time"
        )
    if len(set(numbers)) != len(numbers):
        raise MultipartRefused(MultipartRefusal.INVALID_REQUEST, "part numbers repeat")
    for number in numbers:
        plan.part_length(number)
    return numbers


@dataclass(frozen=True)
class StoredPart:
    number: int
    etag: str
    size: int


def check_completion(
    plan: PartPlan, claimed: dict[int, str], stored: dict[int, StoredPart]
) -> list[StoredPart]:
    """The parts to complete with, in order, if the client's list names stored parts that add up to exactly
    the declared size; else `size_mismatch` (a part missing, unknown, or of another length)."""
    chosen = []
    for number in sorted(claimed):
        part = stored.get(number)
        if part is None or part.etag.strip('"') != claimed[number].strip('"'):
            raise MultipartRefused(
                MultipartRefusal.SIZE_MISMATCH, f"part {number} with that ETag is not in the store"
            )
        chosen.append(part)
    total = sum(part.size for part in chosen)
    expected = list(range(1, plan.part_count + 1))
    if total != plan.size or [part.number for part in chosen] != expected:
        raise MultipartRefused(
            MultipartRefusal.SIZE_MISMATCH,
            f"parts {len(chosen)} of {plan.part_count} hold {total} bytes; the ticket declared {plan.size}",
        )
    return chosen
