"""The reference client's rules without a network: which parts a resume sends, when a file no longer fits the
upload, part URL windows, and the streamed form body S3 parses."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP

import pytest

from app.client.bodies import FileSlice, FormBody
from app.client.parts import NotTheSameFile, RetryPolicy, missing_parts, plan_for_resume, ranges, windows
from app.domain.multipart import MiB, PartPlan

PLAN = PartPlan(21 * MiB, 8 * MiB)  # parts of 8, 8 and 5 MiB


def test_a_resume_sends_only_what_the_store_lacks():
    assert missing_parts(PLAN, {}) == [1, 2, 3]
    assert missing_parts(PLAN, {1: 8 * MiB, 3: 5 * MiB}) == [2]
    assert missing_parts(PLAN, {1: 8 * MiB, 2: 8 * MiB, 3: 5 * MiB}) == []


@pytest.mark.parametrize("stored", [{1: 8 * MiB - 1}, {3: 8 * MiB}, {4: 1}])
def test_stored_parts_that_do_not_fit_the_file_stop_the_resume(stored):
    with pytest.raises(NotTheSameFile):
        missing_parts(PLAN, stored)


def test_the_plan_is_found_again_from_the_first_parts_signed_length():
    assert plan_for_resume(21 * MiB, 8 * MiB) == PLAN
    assert plan_for_resume(6 * MiB, 6 * MiB).part_count == 1
    with pytest.raises(NotTheSameFile):
        plan_for_resume(4 * MiB, 8 * MiB)  # the file shrank under one part


def test_part_urls_are_asked_for_at_most_100_at_a_time():
    assert [len(window) for window in windows(range(1, 251))] == [100, 100, 50]
    assert ranges([5, 1, 2, 3, 7, 8]) == "1-3, 5, 7-8"
    assert [RetryPolicy().delay(n) for n in (1, 2, 3, 6)] == [0.5, 1.0, 2.0, 8.0]


def test_a_slice_streams_its_range_and_counts_what_it_read(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 10)
    seen: list[int] = []
    with FileSlice(path, 250, 20, seen.append) as body:
        assert len(body) == 20
        assert b"".join(iter(lambda: body.read(7), b"")) == (bytes(range(256)) * 2)[250:270]
    assert seen == [7, 7, 6] and body.sent == 20


def test_the_form_body_is_the_fields_then_the_file_and_as_long_as_it_says(tmp_path):
    path = tmp_path / 'a "quoted" name.jpg'
    path.write_bytes(b"\xff\xd8" + b"x" * 100_000)
    fields = {"key": "temp/abc", "Content-Type": "image/jpeg", "policy": "e30="}
    seen: list[int] = []
    with FormBody(fields, path, 100_002, "image/jpeg", seen.append) as body:
        data = b"".join(iter(lambda: body.read(4096), b""))
        assert len(data) == len(body)
        head = f"Content-Type: {body.content_type}\r\n\r\n".encode()
    parts = list(BytesParser(policy=HTTP).parsebytes(head + data).iter_parts())
    assert [part.get_param("name", header="content-disposition") for part in parts] == [*fields, "file"]
    assert parts[-1].get_payload(decode=True) == path.read_bytes()
    assert parts[-1].get_filename() == "a %22quoted%22 name.jpg"
    assert sum(seen) == 100_002  # only the file's bytes move the progress bar
