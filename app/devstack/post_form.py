"""Reading an S3 browser-upload form as a stream, and writing it out again for moto.

The fields before ``file`` are small (AWS caps them at 20 KB) and kept; the file is spooled — in memory up to
1 MiB, then on disk — and only up to the policy's maximum, so a huge or hostile upload never sits in memory.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator
from typing import IO

from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from app.devstack.post_policy import S3Error, SizeRange, invalid_argument

CHUNK = 64 * 1024
# AWS: "The form data and boundaries (excluding the contents of the file) cannot exceed 20 KB."
MAX_FIELDS_BYTES = 20 * 1024
# Small files stay in memory; larger ones roll over to an anonymous temp file.
SPOOL_IN_MEMORY = 1024 * 1024
# moto reads these form fields by exact (lower-case) name; S3 treats field names case-insensitively.
MOTO_LOWERCASE_FIELDS = frozenset({"key", "acl", "success_action_status", "success_action_redirect"})


class FilePart:
    """The ``file`` field, spooled up to the policy's maximum; beyond it bytes are only counted."""

    def __init__(self, filename: str, content_type: str, sizes: SizeRange) -> None:
        self.filename = filename
        self.content_type = content_type
        self.sizes = sizes
        self.size = 0
        # Closed by Form.close() once the upload is forwarded or refused.
        self.spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size <= self.sizes.maximum:  # keep counting past it: S3 reports the ProposedSize
            self.spool.write(data)

    def chunks(self) -> Iterator[bytes]:
        self.spool.seek(0)
        return iter(lambda: self.spool.read(CHUNK), b"")


class Form:
    """The fields before ``file`` (lower-cased name → (name as sent, value)) and the file."""

    def __init__(self) -> None:
        self.fields: dict[str, tuple[str, str]] = {}
        self.file: FilePart | None = None

    def add(self, name: str, value: str) -> None:
        # Two spellings of one field would let moto store a value the policy never saw.
        if name.lower() in self.fields:
            raise invalid_argument(f"The form field '{name}' appears more than once.", name)
        self.fields[name.lower()] = (name, value)

    def close(self) -> None:
        if self.file is not None:
            self.file.spool.close()

    def values(self) -> dict[str, str]:
        return {lower: value for lower, (_, value) in self.fields.items()}

    def encode(self, boundary: bytes) -> tuple[Iterator[bytes], int]:
        """Re-encode for moto, file last, with the client's boundary (known to occur in no part)."""
        assert self.file is not None
        head = b"".join(
            _part_head(boundary, _moto_name(name)) + value.encode() + b"\r\n"
            for name, value in self.fields.values()
        )
        head += _part_head(boundary, "file", self.file.filename or "file", self.file.content_type)
        tail = b"\r\n--" + boundary + b"--\r\n"
        return itertools.chain([head], self.file.chunks(), [tail]), len(head) + self.file.size + len(tail)


def _moto_name(name: str) -> str:
    return name.lower() if name.lower() in MOTO_LOWERCASE_FIELDS else name


def _part_head(boundary: bytes, name: str, filename: str | None = None, content_type: str = "") -> bytes:
    quoted = {"\r": "%0D", "\n": "%0A", '"': "%22"}  # the HTML form encoding of names
    disposition = 'form-data; name="{}"'.format("".join(quoted.get(c, c) for c in name))
    if filename is not None:
        disposition += '; filename="{}"'.format("".join(quoted.get(c, c) for c in filename))
    head = f"--{boundary.decode()}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return (head + "\r\n").encode()


def _multipart_events(stream: IO[bytes], boundary: bytes) -> Iterator[Field | File | Data]:
    decoder = MultipartDecoder(boundary)
    try:
        while True:
            chunk = stream.read(CHUNK)
            decoder.receive_data(chunk or None)
            while not isinstance(event := decoder.next_event(), NeedData):
                if isinstance(event, Epilogue):
                    return
                if isinstance(event, Field | File) and not event.name:
                    raise ValueError("a part without a name")
                if isinstance(event, Field | File | Data):
                    yield event
    except ValueError:  # werkzeug's decoder: truncated, or not multipart at all
        raise malformed() from None


def read_form(
    stream: IO[bytes], boundary: bytes, form: Form, start_file: Callable[[Form, str], SizeRange]
) -> None:
    """Parse the upload into ``form``; ``start_file`` authorizes the fields and sizes the file when it begins."""
    name, value, fields_bytes = "", bytearray(), 0
    for event in _multipart_events(stream, boundary):
        if isinstance(event, Field | File):
            if form.file is not None:  # AWS: "the file or text content must be the last field in the form"
                raise invalid_argument(
                    f"The file must be the last field; found '{event.name}' after it.", "file"
                )
            name, value = event.name, bytearray()
            fields_bytes += len(name)
            if name.lower() == "file":
                filename = event.filename if isinstance(event, File) else ""
                form.file = FilePart(
                    filename, event.headers.get("content-type", ""), start_file(form, filename)
                )
        elif form.file is not None:
            form.file.write(event.data)
        else:
            fields_bytes += len(event.data)
            if fields_bytes > MAX_FIELDS_BYTES:
                raise S3Error(
                    400,
                    "MaxPostPreDataLengthExceeded",
                    "Your POST request fields preceeding the upload file was too large.",
                    MaxPostPreDataLength=MAX_FIELDS_BYTES,
                )
            value += event.data
            if not event.more_data:
                form.add(name, value.decode("utf-8", "replace"))


def malformed() -> S3Error:
    return S3Error(
        400, "MalformedPOSTRequest", "The body of your POST request is not well-formed multipart/form-data."
    )
