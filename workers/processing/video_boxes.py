"""The few MP4/QuickTime boxes read directly, for what FFmpeg cannot say: the codec of a track it has no id for.

FFmpeg leaves a track whose sample entry it does not know (Dolby Vision AV1, `dav1`) without a codec; a
refusal should still name it. Only the movie header is read, box by box, bounded by the sizes the boxes give.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

# The boxes on the way from the movie header to a track's sample descriptions (ISO/IEC 14496-12, 8.5.2).
_TRACK_PATH = (b"mdia", b"minf", b"stbl", b"stsd")
_MOVIE_HEADER_LIMIT = 64 * 1024 * 1024  # a 1 GiB phone video's moov is a few MB


def sample_entry_types(path: str | Path) -> dict[int, str]:
    """The first sample entry's type (fourcc) of each track, by the track's order in the file (FFmpeg's
    stream index for the MP4/QuickTime demuxer)."""
    movie = _movie_header(Path(path))
    found: dict[int, str] = {}
    for index, (_, trak) in enumerate(b for b in _boxes(movie) if b[0] == b"trak"):
        stsd = _descend(trak, _TRACK_PATH)
        # stsd: version+flags (4), entry count (4), then entries: size (4), type (4).
        if stsd is not None and len(stsd) >= 16:
            found[index] = stsd[12:16].decode("latin-1")
    return found


def _movie_header(path: Path) -> bytes:
    with path.open("rb") as fp:
        while header := fp.read(8):
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header)
            skip = 8
            if size == 1:
                size, skip = struct.unpack(">Q", fp.read(8))[0], 16
            if kind == b"moov":
                return fp.read(min(size - skip, _MOVIE_HEADER_LIMIT))
            if size < skip:  # 0: to the end of the file; less: broken
                break
            fp.seek(size - skip, 1)
    return b""


def _descend(data: bytes, path: tuple[bytes, ...]) -> bytes | None:
    for kind in path:
        data = next((body for box, body in _boxes(data) if box == kind), None)
        if data is None:
            return None
    return data


def _boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (type, body) of each box in `data`, stopping at the first that does not fit."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        start = offset + 8
        if size == 1 and offset + 16 <= len(data):
            size, start = struct.unpack_from(">Q", data, offset + 8)[0], offset + 16
        elif size == 0:
            size = len(data) - offset
        if size < start - offset or offset + size > len(data):
            return
        yield kind, data[start : offset + size]
        offset += size
