"""Which parts of a file to send, and whether a file still fits an upload being resumed. No I/O here.

A multipart ticket fixes the part size, so part `n` of a file is always the bytes from `(n - 1) * part_size`,
`part_size` long (the last one the remainder). Resuming, the client knows only its file and the upload id:
the length the broker signs into part 1's URL is the part size, and every part the store already holds
must have exactly the length the plan gives it, or the file is not the one the upload was started with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from app.domain.multipart import MAX_PART_URLS_PER_CALL, PartPlan


class NotTheSameFile(Exception):
    """The local file does not fit the upload's parts (another file, or this one changed)."""


@dataclass(frozen=True)
class PartSpan:
    number: int
    offset: int
    length: int


def span(plan: PartPlan, number: int) -> PartSpan:
    return PartSpan(number, (number - 1) * plan.part_size, plan.part_length(number))


def plan_for_resume(file_size: int, first_part_length: int) -> PartPlan:
    """The ticket's plan, from the file's size and the length signed into part 1's URL."""
    if first_part_length > file_size:
        raise NotTheSameFile(
            f"the upload's first part is {first_part_length} bytes, the whole file only {file_size}"
        )
    return PartPlan(file_size, first_part_length)


def missing_parts(plan: PartPlan, stored: dict[int, int]) -> list[int]:
    """The part numbers still to send, given `{part number: size}` of those the store holds (checked)."""
    for number, size in sorted(stored.items()):
        if not 1 <= number <= plan.part_count:
            raise NotTheSameFile(f"the store holds part {number}; the file makes only {plan.part_count}")
        if size != plan.part_length(number):
            raise NotTheSameFile(
                f"the store holds part {number} with {size} bytes; the file's part {number} has "
                f"{plan.part_length(number)}"
            )
    return [number for number in range(1, plan.part_count + 1) if number not in stored]


def check_signed_length(plan: PartPlan, number: int, signed_length: str | None) -> None:
    """The broker signs each part URL for the length it expects: it must be this file's part length."""
    if signed_length != str(plan.part_length(number)):
        raise NotTheSameFile(
            f"the broker expects part {number} to be {signed_length} bytes; the file's is "
            f"{plan.part_length(number)}"
        )


def windows(numbers: Iterable[int], size: int = MAX_PART_URLS_PER_CALL) -> Iterator[list[int]]:
    """Part numbers in calls of at most `size` (the API's limit per request for part URLs)."""
    window: list[int] = []
    for number in numbers:
        window.append(number)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def ranges(numbers: Iterable[int]) -> str:
    """`1-3, 5, 7-8`: part numbers as a person reads them."""
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a part (or the POST) is tried, and how long to wait between tries (doubling)."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, failed_attempts: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** (failed_attempts - 1)))
