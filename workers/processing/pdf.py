"""The PDF processor: a document is checked, never rewritten. The stored file is the uploaded one, byte for byte
(a signed or filled-in form must stay as it was), so every rule here is a refusal. In the order they apply:

1. The bytes are a PDF: `%PDF-` within the first 1024 bytes, where viewers look for it (`not_pdf`), and
   `%%EOF` within the last 1024, so an upload cut short is `corrupt` even when an earlier revision would parse.
2. pypdf opens it *leniently* (`corrupt` if even that fails). Real producers (phone scanners, old office
   suites) write xref offsets that are a few bytes off, stream lengths that are wrong, junk after `%%EOF`;
   every viewer repairs these, so strict parsing would refuse documents users open every day. Leniency is
   not trusted for the security checks, though: see rule 5.
3. Encrypted files are refused (`pdf_encrypted`), even with an empty user password: their objects cannot be
   inspected without decrypting, and the app cannot preview them.
4. The page tree's `/Count` is checked before any page is walked (`pdf_too_many_pages`); the real count,
   from walking the tree, is checked again at the end and recorded.
5. Active content is refused (`pdf_active_content`) wherever it sits, reachable or not. A lenient parser that
   trusts one xref can be fooled by a file another viewer reads differently (a broken table that one repairs
   by scanning, objects shadowed by an incremental update), so every object is inspected: those the xref
   lists (which must parse: `corrupt` otherwise), every other `N G obj` found in the bytes, and every member
   of every object stream. Active content is (`_inspect_dict`): JavaScript (`/JS`, `/S /JavaScript`, the
   catalog's `/JavaScript` name tree) and XFA forms (scripted); actions that open or import other files
   (`/Launch`, `/GoToR`, `/GoToE`, `/ImportData`); links and form submissions to anything but
   http(s)/mailto/tel (a `file:` or relative URI launches a local file); any web address opened without a
   click (`/OpenAction` or `/AA` URI and submit actions); embedded files (`/EmbeddedFiles`, a file
   specification's `/EF`, `/EmbeddedFile` streams, `/FileAttachment` annotations) and embedded media players
   (RichMedia, 3D, Movie, Sound: they hand embedded bytes to plugins with their own scripts).
6. The inspection is bounded: at most `Settings.pdf_max_objects` objects and `MAX_NODES` values in them (`too_complex`);
   object references are never followed (each object is inspected once, on its own), so cycles cost nothing;
   nesting too deep for the parser is `too_complex` too. The sandbox's CPU and memory limits bound the rest.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pypdf import PdfReader
from pypdf._utils import read_non_whitespace
from pypdf.generic import (
    ArrayObject,
    DictionaryObject,
    IndirectObject,
    NullObject,
    NumberObject,
    PdfObject,
    StreamObject,
    read_object,
)

from app.config import Settings
from app.domain.kinds import MediaKind
from app.domain.rejections import Rejected, RejectionCode
from workers.processing.failures import PDF, judged, rejection_for
from workers.processing.outputs import OutputFile, Processed
from workers.sandbox import ProcessLimits
from workers.sandbox_host import run_attempt

# Where viewers look for the header and the end marker (the PDF reference's implementation notes).
_HEADER_WINDOW = _TRAILER_WINDOW = 1024
# A 500-page tagged document (one structure element per paragraph) has a few tens of thousands of objects;
# 100,000 tiny ones take pypdf ~2.5 s and ~125 MB to parse, well inside the 30 s and 256 MiB of the PDF limits.
# The default of `Settings.pdf_max_objects`.
MAX_OBJECTS = 100_000
# Values inspected across all objects (dictionary entries and array items): ~1 µs each.
MAX_NODES = 5_000_000
# Bytes of objects packed in object streams, decompressed. Parsing is what costs, not inspecting: pypdf takes
# ~0.5 µs of CPU and holds ~22 bytes of memory per byte of object syntax, and it parses (and keeps) a whole
# stream the first time one of its members is looked up. pdf.js `bug1978317.pdf` packs 65,542 link
# annotations, 12.4 MiB, into a 1.5 MB file: 6.5 s and 290 MB, beyond the 256 MiB memory budget. 8 MiB is
# ~4 s and ~180 MB; the largest stream in the pdf.js, qpdf and pypdf test files is 2 MB (a 500-page tagged
# document packs a few MB of structure elements). Counted when decompressed, before anything is parsed.
MAX_PACKED_BYTES = 8 * 2**20

# `N G obj` anywhere in the bytes: what a viewer that rebuilds a broken xref finds. The keyword is found first
# (a literal search, fast over compressed data), then the two numbers in the few bytes before it.
_KEYWORD = re.compile(rb"obj(?![^\x00\t\n\x0c\r ()<>\[\]{}/%])[\x00\t\n\x0c\r ]*")
_NUMBERS = re.compile(rb"(?<![0-9])([0-9]{1,10})[\x00\t\n\x0c\r ]+([0-9]{1,5})[\x00\t\n\x0c\r ]+\Z")
_NUMBERS_WINDOW = 32
_SCRIPT_KEYS = frozenset({"/JS", "/JavaScript", "/XFA"})
_EMBEDDING_KEYS = frozenset({"/EmbeddedFiles", "/EF"})
_EMBEDDING_SUBTYPES = frozenset({"/FileAttachment", "/RichMedia", "/3D", "/Movie", "/Sound"})
_OTHER_FILE_ACTIONS = frozenset({"/Launch", "/GoToR", "/GoToE", "/ImportData"})
_MEDIA_ACTIONS = frozenset({"/Rendition", "/RichMediaExecute", "/Movie", "/Sound"})
_WEB_ACTIONS = frozenset({"/URI", "/SubmitForm"})
_CLICKS = frozenset({"/D", "/U"})  # an annotation's mouse down and up triggers
_WEB_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_URI_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_WHITESPACE = b"\x00\t\n\x0c\r "
_CONTROL_AND_SPACE = re.compile(r"[\x00-\x20\x7f]")  # what browsers strip from a URL before reading it


@dataclass(frozen=True)
class PdfRules:
    max_pages: int = 500
    max_objects: int = MAX_OBJECTS
    max_packed_bytes: int = MAX_PACKED_BYTES


def process(source: Path, mime: str, kind: MediaKind, settings: Settings, workdir: Path) -> Processed:
    rules = PdfRules(max_pages=settings.pdf_max_pages, max_objects=settings.pdf_max_objects)
    limits = ProcessLimits(
        cpu_seconds=settings.pdf_cpu_seconds,
        memory_bytes=settings.pdf_memory_bytes,
        attempts_per_process=settings.sandbox_attempts_per_process,
    )
    return Processed.from_json(run_attempt(inspect_pdf, source, workdir, rules, limits=limits), workdir)


def inspect_pdf(source: Path, workdir: Path, rules: PdfRules) -> dict[str, Any]:
    """Checks `source` and places it, unchanged, as `document.pdf` in `workdir`; `Processed(...).to_json()`.

    Runs inside `workers.sandbox.run_limited`. Raises `Rejected` for a file that must not be stored.
    """
    data = source.read_bytes()
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        raise Rejected(RejectionCode.NOT_PDF, "the file does not start like a PDF")
    if b"%%EOF" not in data[-_TRAILER_WINDOW:]:
        raise Rejected(RejectionCode.CORRUPT, "the PDF is cut short (no end-of-file marker at its end)")
    # A hostile file can make pypdf warn once per object: millions of log lines from the worker.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    with judged(PDF, "the PDF"):
        pages = _check(data, rules)
    output = workdir / "document.pdf"
    _place(source, output)
    return Processed(main=OutputFile(output, "application/pdf", "pdf"), pages=pages).to_json()


def _check(data: bytes, rules: PdfRules) -> int:
    """The page count of a PDF that passes rules 2-6; raises `Rejected` otherwise."""
    found = _object_headers(data, rules.max_objects)  # before pypdf reads every header the xref lists
    reader = _Reader(io.BytesIO(data), strict=False)  # refuses an encrypted file as it opens
    budget = _Budget(rules.max_objects, rules.max_packed_bytes)
    _measure_object_streams(reader, budget)  # before the first lookup makes pypdf parse one
    root = reader.trailer.get("/Root")
    root = root.get_object() if root is not None else None
    page_tree = root.get("/Pages") if isinstance(root, DictionaryObject) else None
    page_tree = page_tree.get_object() if page_tree is not None else None
    if not isinstance(page_tree, DictionaryObject):
        raise Rejected(RejectionCode.CORRUPT, "the PDF has no page tree")
    declared = page_tree.get("/Count")
    if isinstance(declared, NumberObject) and int(declared) > rules.max_pages:
        raise Rejected(RejectionCode.PDF_TOO_MANY_PAGES, f"{int(declared)} pages, at most {rules.max_pages}")
    _inspect_all_objects(reader, data, found, budget)
    pages = len(reader.pages)
    if pages > rules.max_pages:
        raise Rejected(RejectionCode.PDF_TOO_MANY_PAGES, f"{pages} pages, at most {rules.max_pages}")
    if pages == 0:
        raise Rejected(RejectionCode.CORRUPT, "the PDF has no pages")
    return pages


class _Reader(PdfReader):
    """pypdf's reader, refusing an encrypted file (rule 3) as soon as its trailer names an `/Encrypt`: its
    encryption dictionary is never read, so no handler pypdf does not know (`/V 99`: `NotImplementedError`)
    and no password check decides the verdict."""

    def _handle_encryption(self, password: str | bytes | None) -> None:
        raise Rejected(RejectionCode.PDF_ENCRYPTED, "encrypted PDFs are not accepted")


def _place(source: Path, output: Path) -> None:
    """`output` is `source`, byte for byte: a hard link, or a copy across file systems."""
    output.unlink(missing_ok=True)
    try:
        os.link(source, output)
    except OSError:
        shutil.copyfile(source, output)


# --- Rule 5: every object the bytes define ------------------------------------------------------------------


class _Budget:
    """Counts objects, values inspected and packed bytes; beyond any limit the file is `too_complex`."""

    def __init__(self, max_objects: int, max_packed_bytes: int) -> None:
        self.max_objects = max_objects
        self.max_packed_bytes = max_packed_bytes
        self.objects = 0
        self.nodes = 0
        self.packed_bytes = 0

    def packed(self, count: int) -> None:
        self.packed_bytes += count
        if self.packed_bytes > self.max_packed_bytes:
            limit = self.max_packed_bytes / 2**20
            raise Rejected(RejectionCode.TOO_COMPLEX, f"the PDF packs more than {limit:g} MiB of objects")

    def object(self) -> None:
        self.objects += 1
        if self.objects > self.max_objects:
            raise too_many_objects(self.max_objects)

    def values(self, count: int) -> None:
        self.nodes += count
        if self.nodes > MAX_NODES:
            raise Rejected(RejectionCode.TOO_COMPLEX, f"the PDF has more than {MAX_NODES} values")


def too_many_objects(limit: int) -> Rejected:
    return Rejected(RejectionCode.TOO_COMPLEX, f"the PDF has more than {limit} objects")


def _measure_object_streams(reader: PdfReader, budget: _Budget) -> None:
    """The decompressed size of every object stream the xref places objects in, against the budget."""
    for number in sorted({stream for stream, _ in reader.xref_objStm.values()}):
        stream = reader.get_object(IndirectObject(number, 0, reader))  # the stream alone, not its members
        if isinstance(stream, StreamObject):
            budget.packed(len(stream.get_data()))  # pypdf keeps the decompressed data for the parse


def _inspect_all_objects(
    reader: PdfReader, data: bytes, found: list[tuple[int, int, int, int]], budget: _Budget
) -> None:
    """Rule 5 on every object: listed in the xref, `found` by scanning the bytes, packed in an object stream."""
    # A snapshot: pypdf adds to its table the objects it finds by searching when a reference is followed.
    listed = {
        (number, generation): offset
        for generation, table in reader.xref.items()
        for number, offset in table.items()
        if not reader.xref_free_entry.get(generation, {}).get(number, False)
    }
    if len(listed) + len(reader.xref_objStm) > budget.max_objects:
        raise too_many_objects(budget.max_objects)
    _inspect(reader.trailer, budget)
    streams: dict[int, StreamObject] = {}  # object streams by number
    listed_streams: set[int] = set()
    for number, generation in listed:  # what the xref says: must parse
        obj = reader.get_object(IndirectObject(number, generation, reader))
        budget.object()
        _inspect(obj, budget)
        if _is_object_stream(obj):
            streams[number] = obj  # type: ignore[assignment]
            listed_streams.add(number)
    for number, generation, start, end in found:  # what a viewer rebuilding the xref would also see
        if _already_read(listed.get((number, generation)), data, start):
            continue
        obj = _read_at(reader, end)
        budget.object()
        if obj is not None:
            _inspect(obj, budget)
            if _is_object_stream(obj) and number not in streams:
                streams[number] = obj  # type: ignore[assignment]
    for number, stream in streams.items():
        for obj in _members(number, stream, reader, budget, strict=number in listed_streams):
            budget.object()
            _inspect(obj, budget)
    for number, (stream_number, _) in reader.xref_objStm.items():  # in a stream that is nowhere to be found
        if stream_number not in streams:
            budget.object()
            _inspect(reader.get_object(IndirectObject(number, 0, reader)), budget)


def _object_headers(data: bytes, limit: int) -> list[tuple[int, int, int, int]]:
    """(number, generation, start, end) of every `N G obj` header in `data` (`end`: where the object starts).
    Counted as they are found: the scan stops at the first header beyond `limit` (`too_complex`), so a file
    of millions of headers costs no more than `limit` of them."""
    headers = []
    for keyword in _KEYWORD.finditer(data):
        at = keyword.start()
        numbers = _NUMBERS.search(data, max(0, at - _NUMBERS_WINDOW), at)
        if numbers is not None:
            if len(headers) == limit:
                raise too_many_objects(limit)
            headers.append((int(numbers[1]), int(numbers[2]), numbers.start(), keyword.end()))
    return headers


def _already_read(listed_at: int | None, data: bytes, start: int) -> bool:
    """Whether the header at `start` is that of the object the xref lists at `listed_at` (pypdf tolerates
    offsets that point at whitespace before the header)."""
    return listed_at is not None and listed_at <= start and not data[listed_at:start].strip(_WHITESPACE)


def _read_at(reader: PdfReader, offset: int) -> PdfObject | None:
    """The object after an `N G obj` header found by scanning; None when it is not one (bytes of a stream)."""
    try:
        reader.stream.seek(offset)
        return read_object(reader.stream, reader)
    except Exception as error:
        if not _unreadable(error):
            raise
        return None


def _unreadable(error: Exception) -> bool:
    """Whether `error` only says that these bytes are not a readable object (`corrupt` by the table):
    skipped where the bytes need not be an object. Limits, memory and unknown errors still escape."""
    verdict = rejection_for(error, PDF, "the PDF")
    return verdict is not None and verdict.code is RejectionCode.CORRUPT


def _is_object_stream(obj: PdfObject | None) -> bool:
    return isinstance(obj, StreamObject) and obj.get("/Type") == "/ObjStm"


def _members(
    number: int, stream: StreamObject, reader: PdfReader, budget: _Budget, strict: bool
) -> Iterator[PdfObject]:
    """Every object packed in object stream `number`. Failures are `corrupt` only for a stream the xref lists.

    The members pypdf has parsed (it parses a whole stream when one member is looked up, and keeps those the
    xref places in it) are taken from its cache, never parsed twice: a stream of 65,000 link annotations
    (pdf.js `bug1978317.pdf`) took twice the CPU and held two copies of every object."""
    try:
        data = stream.get_data()
        if not strict:  # a listed stream was measured before any parsing
            budget.packed(len(data))
        body = io.BytesIO(data)
        count, first = int(stream["/N"]), int(stream["/First"])
        header = body.read(first).split()
        index = [
            (int(header[at]), int(header[at + 1])) for at in range(0, min(2 * count, len(header) - 1), 2)
        ]
    except Exception as error:
        if strict or not _unreadable(error):
            raise
        return
    if strict:
        _parse_by_pypdf(number, index, reader)
    for member, offset in index:
        cached = _cached_member(number, member, reader)
        if cached is not None:
            yield cached
            continue
        try:
            body.seek(first + offset)
            read_non_whitespace(
                body
            )  # an offset may point at the whitespace before the object (qpdf writes so)
            body.seek(-1, io.SEEK_CUR)
            obj = read_object(body, reader)
        except Exception as error:
            if strict or not _unreadable(error):
                raise
            continue
        yield obj


def _parse_by_pypdf(number: int, index: list[tuple[int, int]], reader: PdfReader) -> None:
    """Have pypdf parse object stream `number` (once) and cache the members the xref places in it, as it
    would anyway the first time one of them is looked up (the page tree walk)."""
    for member, _ in index:
        if reader.xref_objStm.get(member, (None, None))[0] == number:
            reader.get_object(IndirectObject(member, 0, reader))
            return


def _cached_member(number: int, member: int, reader: PdfReader) -> PdfObject | None:
    """Member `member` of object stream `number` as pypdf parsed it, if it did (a member it could not parse
    is cached as null: that one is parsed here, so that its failure counts)."""
    if reader.xref_objStm.get(member, (None, None))[0] != number:
        return None  # another stream, or an incremental update, defines this number: pypdf kept that one
    cached = reader.cache_get_indirect_object(0, member)
    return None if isinstance(cached, NullObject) else cached


def _inspect(obj: PdfObject, budget: _Budget) -> None:
    """Every dictionary in `obj`, however nested. References are not followed: their targets are inspected
    on their own."""
    pending: list[PdfObject] = [obj]
    while pending:
        item = pending.pop()
        if isinstance(item, DictionaryObject):
            budget.values(len(item))
            _inspect_dict(item, budget)
            pending.extend(item.values())
        elif isinstance(item, ArrayObject):
            budget.values(len(item))
            pending.extend(item)


def _inspect_dict(entry: DictionaryObject, budget: _Budget) -> None:
    if not _SCRIPT_KEYS.isdisjoint(entry.keys()):
        _refuse("JavaScript or a scripted form")
    if not _EMBEDDING_KEYS.isdisjoint(entry.keys()) or _name(entry, "/Type") == "/EmbeddedFile":
        _refuse("an embedded file")
    if _name(entry, "/Subtype") in _EMBEDDING_SUBTYPES:
        _refuse("an embedded file or media player")
    _inspect_action(entry)
    for action in _automatic_actions(entry, budget):
        if _name(action, "/S") in _WEB_ACTIONS:
            _refuse("a web address opened without a click")


def _inspect_action(entry: DictionaryObject) -> None:
    kind = _name(entry, "/S")
    if kind == "/JavaScript":
        _refuse("JavaScript")
    if kind in _OTHER_FILE_ACTIONS:
        _refuse(f"an action that opens another file ({kind[1:]})")
    if kind in _MEDIA_ACTIONS:
        _refuse(f"a media action ({kind[1:]})")
    if kind == "/URI":
        _check_address(_resolve(entry.get("/URI")))
    if kind == "/SubmitForm":
        target = _resolve(entry.get("/F"))
        if isinstance(target, DictionaryObject):  # a URL file specification
            target = _resolve(target.get("/F", target.get("/UF")))
        _check_address(target)


def _check_address(value: PdfObject | None) -> None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    address = _CONTROL_AND_SPACE.sub("", value) if isinstance(value, str) else ""
    scheme = _URI_SCHEME.match(address)
    if scheme is None or scheme[1].lower() not in _WEB_SCHEMES:
        _refuse("a link to something other than a web page, e-mail address or phone number")


def _automatic_actions(entry: DictionaryObject, budget: _Budget) -> Iterator[DictionaryObject]:
    """The actions `entry` runs by itself: its `/OpenAction` (an action; an array is a destination) and its
    `/AA` triggers but mouse down and up (clicks), with their `/Next` chains. The one place references are
    followed: a visited set stops cycles, the budget long chains shared by many dictionaries."""
    pending: list[PdfObject | None] = []
    open_action = _resolve(entry.get("/OpenAction"))
    if isinstance(open_action, DictionaryObject):
        pending.append(open_action)
    triggers = _resolve(entry.get("/AA"))
    if isinstance(triggers, DictionaryObject):
        pending.extend(action for trigger, action in triggers.items() if trigger not in _CLICKS)
    seen: set[int] = set()
    while pending:
        action = _resolve(pending.pop())
        if id(action) in seen:
            continue
        seen.add(id(action))
        budget.values(1)
        if isinstance(action, ArrayObject):  # /Next may list several actions
            pending.extend(action)
        elif isinstance(action, DictionaryObject):
            yield action
            pending.append(action.get("/Next"))


def _resolve(value: PdfObject | None) -> PdfObject | None:
    return value.get_object() if isinstance(value, IndirectObject) else value


def _name(entry: DictionaryObject, key: str) -> str | None:
    """A name-valued entry, such as an action's `/S`; an indirect one is followed, as viewers do."""
    value = entry.get(key)
    if isinstance(value, IndirectObject):
        value = value.get_object()
    return value if isinstance(value, str) else None


def _refuse(what: str) -> None:
    raise Rejected(RejectionCode.PDF_ACTIVE_CONTENT, f"the PDF contains {what}")
