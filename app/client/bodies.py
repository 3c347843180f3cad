"""Request bodies that stream a file and report each block read, for `requests` to send.

`requests` sends an object with `read` and `__len__` as a stream with that `Content-Length` (never chunked:
S3 refuses chunked POSTs, and a part PUT's length is signed), reading a block at a time; the callback moves
the progress bar as blocks leave. A body is read once: a retry makes a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

BLOCK = 64 * 1024

OnRead = Callable[[int], None]


class FileSlice:
    """`length` bytes of a file from `offset` (a part), streamed."""

    def __init__(self, path: Path, offset: int, length: int, on_read: OnRead) -> None:
        self._file: BinaryIO = path.open("rb")
        self._file.seek(offset)
        self._left = length
        self._length = length
        self._on_read = on_read
        self.sent = 0  # bytes handed to the connection so far (the progress to undo if this try fails)

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        block = self._file.read(size) if size else b""
        self._left -= len(block)
        self.sent += len(block)
        if block:
            self._on_read(len(block))
        return block

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(BLOCK):
            yield block

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileSlice:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FormBody(FileSlice):
    """A multipart/form-data body: the ticket's fields, then the file (last, as S3 requires), streamed.

    Only the file's bytes are reported to `on_read`; the few hundred bytes of form around them are not.
    """

    def __init__(
        self, fields: dict[str, str], path: Path, size: int, content_type: str, on_read: OnRead
    ) -> None:
        super().__init__(path, 0, size, on_read)
        self.boundary = f"broker-{uuid.uuid4().hex}"
        head = "".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quoted(path.name)}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        self._head = head.encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._total = len(self._head) + size + len(self._tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._total

    def read(self, size: int = -1) -> bytes:
        wanted = len(self) if size is None or size < 0 else size
        out = b""
        if self._head:
            out, self._head = self._head[:wanted], self._head[wanted:]
        if len(out) < wanted:
            out += super().read(wanted - len(out))
        if len(out) < wanted and self._left == 0:
            more, self._tail = self._tail[: wanted - len(out)], self._tail[wanted - len(out) :]
            out += more
        return out


def _quoted(text: str) -> str:
    """A form-data parameter value as browsers write it (WHATWG): `"` and line breaks percent-encoded."""
    return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
