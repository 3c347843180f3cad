"""Copying the upload's packets into the main file as they are: timestamps the MP4 muxer accepts, no user data.

The main file is the upload remuxed, not re-encoded: the same pictures and sound, byte for byte, in a new MP4.
Two things about a phone's packets must still change on the way: their decode timestamps (`Retimer`), and the
NAL units that carry arbitrary data (`strip_user_data`). What cannot be copied even then raises
`NotRemuxable`, and the main file is encoded instead (`workers.processing.video`).
"""

from __future__ import annotations

from av.packet import Packet


class NotRemuxable(Exception):
    """The MP4 muxer refuses a copied stream as it is (timestamps no shift can mend, parameters it cannot
    store): the main file is encoded instead of copied."""


class Retimer:
    """Decode timestamps the MP4 muxer accepts for one copied stream, presentation times left as they are.

    Phones write what FFmpeg's demuxer reads back as a decode time after its presentation time: QuickTime's
    negative composition offsets with an edit list (iPhone HDR and spatial video read as pts 20 < dts 60),
    or a first sample of duration 0 (two packets with one decode time). The muxer needs decode times strictly
    increasing and never after presentation. So decode times are made increasing (a tie moves one tick on)
    and then all moved back by one shift, the smallest that puts every one at or before its presentation time
    over the first `WINDOW` packets (B-frame reordering is at most 16 deep). The MP4 muxer writes a negative
    decode start as an edit list, which players honour. A later packet the shift does not cover cannot be
    copied as it is: `NotRemuxable`.
    """

    WINDOW = 32

    def __init__(self) -> None:
        self.waiting: list[Packet] | None = []
        self.shift = 0
        self.last_dts: int | None = None

    def push(self, packet: Packet) -> list[Packet]:
        if self.waiting is None:
            return [self._retimed(packet)]
        self.waiting.append(packet)
        return self._settle() if len(self.waiting) >= self.WINDOW else []

    def flush(self) -> list[Packet]:
        return self._settle() if self.waiting is not None else []

    def _settle(self) -> list[Packet]:
        waiting, self.waiting = self.waiting or [], None
        last, late = None, 0
        for packet in waiting:  # the increasing decode times before any shift; how far the worst is late
            last = packet.dts if last is None or packet.dts > last else last + 1
            late = max(late, last - _pts(packet))
        self.shift = late
        return [self._retimed(packet) for packet in waiting]

    def _retimed(self, packet: Packet) -> Packet:
        pts, dts = _pts(packet), packet.dts - self.shift
        if self.last_dts is not None and dts <= self.last_dts:
            dts = self.last_dts + 1
        if pts < dts and packet.pts == packet.dts:  # not reordered (audio, intra): presentation follows
            pts = dts
        if pts < dts:
            raise NotRemuxable(f"a packet decodes at {dts} after it is shown at {pts}")
        packet.pts, packet.dts, self.last_dts = pts, dts, dts
        return packet


def _pts(packet: Packet) -> int:
    return packet.pts if packet.pts is not None else packet.dts


# SEI and the NAL unit types no standard uses carry whatever the encoder or the phone put there (a location
# in user data unregistered, the encoder's settings): none is needed to decode. HEVC keeps type 62, the
# Dolby Vision RPU (picture metadata, no user data); its SEI types are 39 (prefix) and 40 (suffix).
_DROPPED_NALS = {
    "h264": frozenset({6, *range(24, 32)}),
    "hevc": frozenset({*range(39, 62), 63}),
}


class UserDataStripper:
    """Drops SEI and unspecified NAL units from a copied H.264 or HEVC track: from every packet (NAL units
    behind 1-4 byte lengths, as MP4 stores them) and from the decoder configuration (`hvcC` has SEI arrays;
    `avcC` holds only parameter sets). FFmpeg's `filter_units` would do the packets, but it writes them
    back in Annex B and leaves the configuration alone, which the muxer then pairs wrongly."""

    def __init__(self, codec: str, extradata: bytes | None) -> None:
        self.dropped = _DROPPED_NALS[codec]
        self.hevc = codec == "hevc"
        self.length_size = _length_size(codec, extradata or b"")

    def configuration(self, extradata: bytes) -> bytes:
        return hvcc_without_sei(extradata) if self.hevc else extradata

    def packet(self, packet: Packet) -> Packet:
        """`packet` itself when it has nothing to drop, else a copy of it without those units."""
        data, kept, offset, size = bytes(packet), [], 0, self.length_size
        dropped = False
        while offset + size <= len(data):
            end = offset + size + int.from_bytes(data[offset : offset + size], "big")
            if end > len(data) or end == offset + size:  # past the packet, or empty: the decoder judges
                return packet
            unit_type = (data[offset + size] >> 1) & 0x3F if self.hevc else data[offset + size] & 0x1F
            if unit_type in self.dropped:
                dropped = True
            else:
                kept.append(data[offset:end])
            offset = end
        if not dropped:
            return packet
        stripped = Packet(b"".join(kept))
        stripped.pts, stripped.dts, stripped.duration = packet.pts, packet.dts, packet.duration
        stripped.time_base, stripped.is_keyframe = packet.time_base, packet.is_keyframe
        return stripped


def _length_size(codec: str, extradata: bytes) -> int:
    """The NAL length field's size from `avcC` (byte 4) or `hvcC` (byte 21); 4 when there is no record."""
    at = 4 if codec == "h264" else 21
    if len(extradata) > at and extradata[0] == 1:
        return (extradata[at] & 0x03) + 1
    return 4


def strip_user_data(codec: str, extradata: bytes | None) -> UserDataStripper | None:
    return UserDataStripper(codec, extradata) if codec in _DROPPED_NALS else None


def hvcc_without_sei(extradata: bytes) -> bytes:
    """An HEVC decoder configuration record (`hvcC`, ISO/IEC 14496-15 8.3.3) without its SEI arrays: x265
    and phones put their user data SEI there too, and the bitstream filter only sees the packets."""
    if len(extradata) < 23 or extradata[0] != 1:  # not a configuration record (Annex B): left to the filter
        return extradata
    kept: list[bytes] = []
    offset = 23
    for _ in range(extradata[22]):
        start, kind = offset, extradata[offset] & 0x3F
        count = int.from_bytes(extradata[offset + 1 : offset + 3], "big")
        offset += 3
        for _ in range(count):
            offset += 2 + int.from_bytes(extradata[offset : offset + 2], "big")
        if kind not in _HEVC_SEI_TYPES:
            kept.append(extradata[start:offset])
    return extradata[:22] + bytes([len(kept)]) + b"".join(kept)


_HEVC_SEI_TYPES = frozenset({39, 40})
