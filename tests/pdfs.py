"""Real PDF files for tests, made on the fly: ordinary plans, and every kind of content the processor refuses.

Most are written with pypdf's writer, as a producer would. `raw_pdf` assembles bytes by hand for what no
writer makes on purpose (an object graph nested thousands deep, JavaScript hidden in an object stream).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

from pypdf import PageObject, PdfWriter
from pypdf.actions import JavaScript, PageTrigger
from pypdf.annotations import Link
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
    RectangleObject,
    TextStringObject,
)

A4 = (595, 842)


def _name(value: str) -> NameObject:
    return NameObject(value)


def _text_page(writer: PdfWriter, text: str) -> PageObject:
    """A page with a line of Helvetica text, as a training plan has."""
    page = writer.add_blank_page(*A4)
    font = DictionaryObject(
        {
            _name("/Type"): _name("/Font"),
            _name("/Subtype"): _name("/Type1"),
            _name("/BaseFont"): _name("/Helvetica"),
        }
    )
    page[_name("/Resources")] = DictionaryObject(
        {_name("/Font"): DictionaryObject({_name("/F1"): writer._add_object(font)})}
    )
    content = DecodedStreamObject()
    content.set_data(f"BT /F1 18 Tf 72 760 Td ({text}) Tj ET".encode())
    page[_name("/Contents")] = writer._add_object(content)
    return page


def _bytes(writer: PdfWriter) -> bytes:
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _writer(pages: int = 1) -> PdfWriter:
    writer = PdfWriter()
    for number in range(1, pages + 1):
        _text_page(writer, f"Week {number}: squats 5x5, bench 5x5, rows 5x5")
    return writer


def plan(pages: int = 3, made: Callable[[PdfWriter], None] | None = None) -> bytes:
    """A training plan of `pages` text pages with an ordinary web link, which is not active content."""
    writer = _writer(pages)
    writer.add_annotation(0, Link(rect=(72, 700, 300, 720), url="https://example.com/warm-up"))
    if made:
        made(writer)
    return _bytes(writer)


def blank_pages(pages: int) -> bytes:
    """`pages` empty pages sharing nothing but the page tree: the cheapest long document."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(*A4)
    return _bytes(writer)


def encrypted(user_password: str = "") -> bytes:
    """Encrypted; with an empty user password any viewer opens it without asking."""

    def encrypt(writer: PdfWriter) -> None:
        writer.encrypt(user_password, owner_password="owner-secret", algorithm="AES-128")

    return plan(made=encrypt)


def document_javascript() -> bytes:
    """JavaScript in the catalog's /Names /JavaScript name tree: runs when the document opens."""
    return plan(made=lambda writer: writer.add_open_action(JavaScript("app.alert('hello');")))


def open_action(action: DictionaryObject) -> bytes:
    """`action` as the catalog's /OpenAction."""

    def add(writer: PdfWriter) -> None:
        writer._root_object[_name("/OpenAction")] = writer._add_object(action)

    return plan(made=add)


def page_javascript() -> bytes:
    """JavaScript in the first page's additional actions (/AA /O: on page open)."""
    return plan(made=lambda writer: writer.pages[0].add_action(PageTrigger.OPEN, JavaScript("app.beep(0);")))


def link_action(action: DictionaryObject) -> bytes:
    """A link annotation on the first page whose /A is `action` (runs when the reader clicks it)."""

    def add(writer: PdfWriter) -> None:
        annotation = DictionaryObject(
            {
                _name("/Type"): _name("/Annot"),
                _name("/Subtype"): _name("/Link"),
                _name("/Rect"): RectangleObject((72, 600, 300, 620)),
                _name("/A"): action,
            }
        )
        writer.add_annotation(0, annotation)

    return plan(made=add)


def form_field_javascript() -> bytes:
    """An AcroForm text field whose keystroke action (/AA /K) is JavaScript, as calculated forms have."""

    def add(writer: PdfWriter) -> None:
        field = DictionaryObject(
            {
                _name("/Type"): _name("/Annot"),
                _name("/Subtype"): _name("/Widget"),
                _name("/FT"): _name("/Tx"),
                _name("/T"): TextStringObject("weight"),
                _name("/Rect"): RectangleObject((72, 500, 200, 520)),
                _name("/AA"): DictionaryObject(
                    {_name("/K"): action("/JavaScript", "/JS", "AFNumber_Keystroke(1)")}
                ),
            }
        )
        reference = writer._add_object(field)
        page = writer.pages[0]
        page[_name("/Annots")].append(reference)
        writer._root_object[_name("/AcroForm")] = DictionaryObject(
            {_name("/Fields"): ArrayObject([reference])}
        )

    return plan(made=add)


def action(kind: str, key: str, value: str) -> DictionaryObject:
    """An action dictionary: `action("/Launch", "/F", "calc.exe")`, `action("/URI", "/URI", "file:///x")`."""
    return DictionaryObject(
        {
            _name("/Type"): _name("/Action"),
            _name("/S"): _name(kind),
            _name(key): TextStringObject(value),
        }
    )


def attachment() -> bytes:
    """An embedded file in the catalog's /Names /EmbeddedFiles name tree."""
    return plan(made=lambda writer: writer.add_attachment("macro.xlsm", b"PK\x03\x04 not really"))


def file_attachment_annotation() -> bytes:
    """A /FileAttachment annotation carrying its own embedded file stream (no name tree)."""

    def add(writer: PdfWriter) -> None:
        embedded = DecodedStreamObject()
        embedded.set_data(b"MZ not really a program")
        embedded[_name("/Type")] = _name("/EmbeddedFile")
        spec = DictionaryObject(
            {
                _name("/Type"): _name("/Filespec"),
                _name("/F"): TextStringObject("setup.exe"),
                _name("/EF"): DictionaryObject({_name("/F"): writer._add_object(embedded)}),
            }
        )
        annotation = DictionaryObject(
            {
                _name("/Type"): _name("/Annot"),
                _name("/Subtype"): _name("/FileAttachment"),
                _name("/Rect"): RectangleObject((72, 400, 92, 420)),
                _name("/FS"): spec,
            }
        )
        writer.add_annotation(0, annotation)

    return plan(made=add)


def cyclic_arrays(count: int = 2000) -> bytes:
    """Arrays referring to one another in a ring, each also to itself, hung off the catalog."""

    def add(writer: PdfWriter) -> None:
        arrays = [ArrayObject() for _ in range(count)]
        references = [writer._add_object(array) for array in arrays]
        for index, array in enumerate(arrays):
            array.extend([references[index], references[(index + 1) % count], NumberObject(index)])
        writer._root_object[_name("/Ring")] = references[0]

    return plan(made=add)


def truncated() -> bytes:
    data = plan()
    return data[: len(data) * 2 // 3]


def html() -> bytes:
    return b"<!DOCTYPE html><html><body><h1>Week 1</h1></body></html>\n"


# --- Hand-assembled files ----------------------------------------------------------------------------------

_CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
_PAGES = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
_PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>"


def raw_pdf(
    extra: dict[int, bytes] | None = None, catalog: bytes = _CATALOG, packed: frozenset[int] = frozenset()
) -> bytes:
    """A one-page PDF built byte by byte: objects 1-3 are the catalog, page tree and page, `extra` adds more.

    Objects whose numbers are in `packed` go into one compressed object stream (with an xref stream, PDF
    1.5), where a scan of the file's bytes cannot see them.
    """
    objects = {1: catalog, 2: _PAGES, 3: _PAGE, **(extra or {})}
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for number, body in objects.items():
        if number not in packed:
            offsets[number] = len(out)
            out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    if not packed:
        size = max(objects) + 1
        xref_at = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % size
        for number in range(1, size):
            out += b"%010d 00000 n \n" % offsets[number] if number in offsets else b"0000000000 65535 f \n"
        out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref_at)
        return bytes(out)

    stream_number, xref_number = max(objects) + 1, max(objects) + 2
    members = sorted(packed)
    bodies, header, position = b"", b"", 0
    for number in members:
        header += b"%d %d " % (number, position)
        bodies += objects[number] + b"\n"
        position = len(bodies)
    data = zlib.compress(header + bodies)
    offsets[stream_number] = len(out)
    out += b"%d 0 obj\n<< /Type /ObjStm /N %d /First %d /Filter /FlateDecode /Length %d >>\nstream\n" % (
        stream_number,
        len(members),
        len(header),
        len(data),
    )
    out += data + b"\nendstream\nendobj\n"
    offsets[xref_number] = len(out)
    rows = b"\x00\x00\x00\x00\x00\xff\xff"
    for number in range(1, xref_number + 1):
        if number in packed:
            rows += b"\x02" + stream_number.to_bytes(4, "big") + members.index(number).to_bytes(2, "big")
        elif number in offsets:
            rows += b"\x01" + offsets[number].to_bytes(4, "big") + b"\x00\x00"
        else:
            rows += b"\x00\x00\x00\x00\x00\xff\xff"
    rows = zlib.compress(rows)
    out += (
        b"%d 0 obj\n<< /Type /XRef /Size %d /W [1 4 2] /Root 1 0 R /Filter /FlateDecode /Length %d >>\nstream\n"
        % (xref_number, xref_number + 1, len(rows))
    )
    out += rows + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % offsets[xref_number]
    return bytes(out)


def hidden_javascript() -> bytes:
    """An /OpenAction JavaScript action stored compressed inside an object stream."""
    return raw_pdf(
        {4: b"<< /S /JavaScript /JS (app.alert\\(1\\)) >>"},
        catalog=b"<< /Type /Catalog /Pages 2 0 R /OpenAction 4 0 R >>",
        packed=frozenset({4}),
    )


def deeply_nested(depth: int) -> bytes:
    """An array nested `depth` deep, hung off the catalog: a parser that recurses per level overflows."""
    return raw_pdf(
        {4: b"[" * depth + b"]" * depth},
        catalog=b"<< /Type /Catalog /Pages 2 0 R /Deep 4 0 R >>",
    )


def object_flood(count: int) -> bytes:
    """`count` tiny objects nobody refers to: a few bytes each, but each one must be parsed to be judged."""
    return raw_pdf({number: b"[1]" for number in range(4, count + 4)})


def misindexed_javascript() -> bytes:
    """An /OpenAction JavaScript object whose xref entry points at the header: a parser that trusts the
    table drops it, a viewer that searches for `4 0 obj` runs it."""
    data = raw_pdf(
        {4: b"<< /S /JavaScript /JS (app.alert\\(1\\)) >>"},
        catalog=b"<< /Type /Catalog /Pages 2 0 R /OpenAction 4 0 R >>",
    )
    offset = data.index(b"4 0 obj")
    return data.replace(b"%010d 00000 n " % offset, b"%010d 00000 n " % 9)


def shifted_offsets() -> bytes:
    """An ordinary plan with bytes inserted after the header, so every xref offset is wrong: viewers repair it."""
    data = plan()
    newline = data.index(b"\n") + 1
    return data[:newline] + b"%" + b"x" * 40 + b"\n" + data[newline:]


def understated_count(pages: int) -> bytes:
    """`pages` blank pages whose page tree claims /Count 1."""
    data = blank_pages(pages)
    claim = b"/Count %d" % pages
    return data.replace(claim, b"/Count 1".ljust(len(claim)))


def cyclic_page_tree() -> bytes:
    """A page tree node that lists itself among its kids."""
    return raw_pdf(
        {2: b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>"},
    )


def cyclic_action_chain() -> bytes:
    """Page-open actions whose /Next chain loops back to the first: harmless GoTo actions, endlessly."""
    return raw_pdf(
        {
            3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /AA << /O 4 0 R >> >>",
            4: b"<< /S /GoTo /D [3 0 R /Fit] /Next 5 0 R >>",
            5: b"<< /S /GoTo /D [3 0 R /Fit] /Next [4 0 R 5 0 R] >>",
        }
    )


def orphan_javascript() -> bytes:
    """An /OpenAction JavaScript object that the xref marks free: only a viewer that rebuilds the table (as
    they do for any file whose table looks damaged) finds and runs it."""
    data = raw_pdf(
        {4: b"<< /S /JavaScript /JS (app.alert\\(1\\)) >>"},
        catalog=b"<< /Type /Catalog /Pages 2 0 R /OpenAction 4 0 R >>",
    )
    offset = data.index(b"4 0 obj")
    return data.replace(b"%010d 00000 n " % offset, b"0000000000 65535 f ")


def overflowing_startxref() -> bytes:
    """A one-page file whose `startxref` is beyond any integer a seek takes (pypdf: OverflowError)."""
    data = raw_pdf()
    at = data.rindex(b"startxref\n") + len(b"startxref\n")
    return data[:at] + b"99999999999999999999" + data[data.index(b"\n", at) :]


def unknown_encryption() -> bytes:
    """A one-page file whose trailer names an encryption handler version no reader knows (/V 99)."""
    return raw_pdf().replace(b"/Root 1 0 R", b"/Root 1 0 R /Encrypt << /Filter /Standard /V 99 /R 99 >>")


def packed_arrays(count: int, length: int) -> bytes:
    """`count` dictionaries, each holding an array of `length` zeros, all packed in one object stream: a
    file of a few KB that is ~2 bytes of object syntax per value once decompressed."""
    body = b"<< /K [" + b"0 " * length + b"] >>"
    return raw_pdf({number: body for number in range(4, count + 4)}, packed=frozenset(range(4, count + 4)))


def padded_object_stream() -> bytes:
    """A one-page file whose page tree and an info dictionary are packed, each offset pointing at the
    newline before its object, as qpdf writes them."""
    return raw_pdf({2: b"\n" + _PAGES, 4: b"\n<< /Title (Week 1) >>"}, packed=frozenset({2, 4}))
