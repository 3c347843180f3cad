"""The PDF processor through `process`, so every file goes through the sandbox as it does in the worker."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.domain.kinds import KINDS
from app.domain.rejections import Rejected, RejectionCode
from tests import pdfs
from workers.processing import pdf
from workers.processing.outputs import Processed

SETTINGS = Settings()


def _process(tmp_path: Path, data: bytes, settings: Settings = SETTINGS) -> Processed:
    source = tmp_path / "source"
    source.write_bytes(data)
    return pdf.process(source, "application/pdf", KINDS["document"], settings, tmp_path)


def _refusal(tmp_path: Path, data: bytes, settings: Settings = SETTINGS) -> Rejected:
    with pytest.raises(Rejected) as refused:
        _process(tmp_path, data, settings)
    return refused.value


def test_a_plan_is_stored_byte_for_byte_with_its_page_count(tmp_path: Path):
    data = pdfs.plan(3)
    processed = _process(tmp_path, data)

    assert processed.pages == 3
    assert processed.main.path == tmp_path / "document.pdf"
    assert (processed.main.content_type, processed.main.extension) == ("application/pdf", "pdf")
    assert processed.variants == {}
    assert hashlib.sha256(processed.main.path.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (tmp_path / "source").read_bytes() == data  # the upload itself is untouched


def test_a_damaged_xref_that_viewers_repair_is_accepted(tmp_path: Path):
    """Lenient parsing: every offset is wrong, as after a careless edit; every viewer opens it."""
    data = pdfs.shifted_offsets()
    processed = _process(tmp_path, data)
    assert processed.pages == 3
    assert processed.main.path.read_bytes() == data


@pytest.mark.parametrize("user_password", ["", "secret"])
def test_encrypted_files_are_refused_even_with_an_empty_password(tmp_path: Path, user_password: str):
    assert _refusal(tmp_path, pdfs.encrypted(user_password)).code is RejectionCode.PDF_ENCRYPTED


# Files are made inside the test (ids name them): as parameters, their bytes would become the test ids.
ACTIVE = {
    "document-javascript": pdfs.document_javascript,
    "open-action-javascript": lambda: pdfs.open_action(pdfs.action("/JavaScript", "/JS", "app.alert(1)")),
    "page-open-javascript": pdfs.page_javascript,
    "link-javascript": lambda: pdfs.link_action(pdfs.action("/JavaScript", "/JS", "app.alert(1)")),
    "form-field-javascript": pdfs.form_field_javascript,
    "javascript-in-object-stream": pdfs.hidden_javascript,
    "javascript-the-xref-misplaces": pdfs.misindexed_javascript,
    "javascript-the-xref-marks-free": pdfs.orphan_javascript,
    "escaped-name-javascript": lambda: pdfs.raw_pdf(
        {4: b"<< /S /J#61vaScript /J#53 (app.alert\\(1\\)) >>"},
        catalog=b"<< /Type /Catalog /Pages 2 0 R /OpenAction 4 0 R >>",
    ),
    "embedded-file": pdfs.attachment,
    "file-attachment-annotation": pdfs.file_attachment_annotation,
    "launch-on-open": lambda: pdfs.open_action(pdfs.action("/Launch", "/F", "calc.exe")),
    "launch-link": lambda: pdfs.link_action(pdfs.action("/Launch", "/F", "calc.exe")),
    "remote-go-to": lambda: pdfs.link_action(pdfs.action("/GoToR", "/F", "\\\\evil\\share\\plan.pdf")),
    "file-uri": lambda: pdfs.link_action(pdfs.action("/URI", "/URI", "file:///C:/Windows/System32/calc.exe")),
    "javascript-uri": lambda: pdfs.link_action(pdfs.action("/URI", "/URI", " JavaScript:alert(1)")),
    "relative-uri": lambda: pdfs.link_action(pdfs.action("/URI", "/URI", "setup.exe")),
    "web-address-on-open": lambda: pdfs.open_action(pdfs.action("/URI", "/URI", "https://tracker.example/o")),
}


@pytest.mark.parametrize("name", ACTIVE)
def test_active_content_is_refused(tmp_path: Path, name: str):
    assert _refusal(tmp_path, ACTIVE[name]()).code is RejectionCode.PDF_ACTIVE_CONTENT


PASSIVE = {
    "web-link": lambda: pdfs.link_action(pdfs.action("/URI", "/URI", "https://example.com/squats")),
    "mail-link": lambda: pdfs.link_action(pdfs.action("/URI", "/URI", "mailto:coach@example.com")),
    "looping-go-to-actions-on-page-open": pdfs.cyclic_action_chain,
}


@pytest.mark.parametrize("name", PASSIVE)
def test_links_and_navigation_are_not_active_content(tmp_path: Path, name: str):
    assert _process(tmp_path, PASSIVE[name]()).pages >= 1


def test_other_files_are_not_pdf(tmp_path: Path):
    assert _refusal(tmp_path, pdfs.html()).code is RejectionCode.NOT_PDF
    assert _refusal(tmp_path, b"\n" * 2000 + pdfs.plan()).code is RejectionCode.NOT_PDF
    assert _process(tmp_path, b"\n" * 100 + pdfs.plan()).pages == 3  # where viewers still find the header


def test_unreadable_pdfs_are_corrupt(tmp_path: Path):
    assert _refusal(tmp_path, pdfs.truncated()).code is RejectionCode.CORRUPT
    assert _refusal(tmp_path, b"%PDF-1.7\n" + b"garbage " * 200 + b"\n%%EOF\n").code is RejectionCode.CORRUPT
    assert _refusal(tmp_path, pdfs.cyclic_page_tree()).code is RejectionCode.CORRUPT


def test_at_most_500_pages(tmp_path: Path):
    assert _process(tmp_path, pdfs.blank_pages(500)).pages == 500
    assert _refusal(tmp_path, pdfs.blank_pages(501)).code is RejectionCode.PDF_TOO_MANY_PAGES
    # The declared /Count is only a first check: the pages are counted too.
    assert _refusal(tmp_path, pdfs.understated_count(501)).code is RejectionCode.PDF_TOO_MANY_PAGES


def test_cyclic_object_graphs_are_inspected_once(tmp_path: Path):
    started = time.monotonic()
    assert _process(tmp_path, pdfs.cyclic_arrays(2000)).pages == 3
    assert time.monotonic() - started < 5


def test_nesting_too_deep_is_too_complex(tmp_path: Path):
    assert _process(tmp_path, pdfs.deeply_nested(50)).pages == 1
    assert _refusal(tmp_path, pdfs.deeply_nested(100_000)).code is RejectionCode.TOO_COMPLEX


def test_too_many_objects_is_too_complex_before_they_are_parsed(tmp_path: Path):
    settings = SETTINGS.model_copy(update={"pdf_max_objects": 1000})
    assert _process(tmp_path, pdfs.object_flood(990), settings).pages == 1
    started = time.monotonic()
    assert _refusal(tmp_path, pdfs.object_flood(1000), settings).code is RejectionCode.TOO_COMPLEX
    assert time.monotonic() - started < 2


def test_an_offset_beyond_any_integer_is_corrupt(tmp_path: Path):
    """pypdf raises OverflowError seeking to `startxref 99999999999999999999`: the table makes it corrupt."""
    assert _refusal(tmp_path, pdfs.overflowing_startxref()).code is RejectionCode.CORRUPT


def test_an_unknown_encryption_handler_is_encrypted_not_a_crash(tmp_path: Path):
    """pypdf raises NotImplementedError for /V 99; the trailer's /Encrypt is enough to refuse, unread."""
    assert _refusal(tmp_path, pdfs.unknown_encryption()).code is RejectionCode.PDF_ENCRYPTED


def test_packed_objects_whose_offsets_point_at_whitespace_are_read(tmp_path: Path):
    assert _process(tmp_path, pdfs.padded_object_stream()).pages == 1


def test_objects_packed_beyond_the_parse_budget_are_too_complex_before_parsing(tmp_path: Path):
    """A 9 KB file that decompresses to 9 MiB of object syntax: refused without pypdf parsing any of it."""
    data = pdfs.packed_arrays(count=1, length=9 * 2**19)
    assert len(data) < 64 * 1024
    started = time.process_time()
    refusal = _refusal(tmp_path, data)
    assert refusal.code is RejectionCode.TOO_COMPLEX
    assert "MiB of objects" in refusal.message
    assert time.process_time() - started < 1  # the sandbox's CPU is not counted here: the wall clock below is
    assert _process(tmp_path, pdfs.packed_arrays(count=10, length=1000)).pages == 1


def test_memory_exhausted_inside_pypdf_is_too_large_to_process(tmp_path: Path):
    """4 MB of packed arrays need ~80 MB once pypdf has parsed them: over a 64 MiB budget, pypdf's parser
    runs out of memory while reading a dictionary and raises PdfReadError from the MemoryError, which must
    still be reported as memory, not as a corrupt file."""
    settings = SETTINGS.model_copy(update={"pdf_memory_bytes": 64 * 1024 * 1024})
    data = pdfs.packed_arrays(count=2000, length=1000)
    started = time.monotonic()
    assert _refusal(tmp_path, data, settings).code is RejectionCode.TOO_LARGE_TO_PROCESS
    assert time.monotonic() - started < 20


def test_twenty_megabytes_of_object_headers_stop_at_the_limit(tmp_path: Path):
    """Counted while scanning: 2.5 million `1 0 obj` lines cost no more than the 100,000 allowed."""
    data = b"%PDF-1.7\n" + b"1 0 obj\n" * 2_500_000 + b"%%EOF\n"
    started = time.monotonic()
    assert _refusal(tmp_path, data).code is RejectionCode.TOO_COMPLEX
    assert time.monotonic() - started < 3
