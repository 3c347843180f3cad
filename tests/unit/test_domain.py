"""The domain rules, no I/O: kinds, keys, ticket planning, the state machine."""

from __future__ import annotations

import itertools
from datetime import date

import pytest

from app.domain.keys import UnsafeKeySegment, final_key, temp_key, upload_id_from_temp_key
from app.domain.kinds import KINDS, Visibility
from app.domain.states import UploadStatus as S
from app.domain.states import can_move
from app.domain.tickets import CONTEXT_ID, TicketRefusal, TicketRefused, TicketRequest, plan_ticket

TODAY = date(2026, 11, 24)
UID = "5b1f6c1e-8a7e-4d0a-9a57-1f0a3c5e9b11"


def plan(kind: str, content_type: str = "image/jpeg", size: int = 1000, roles=frozenset(), **context):
    return plan_ticket(TicketRequest(kind, content_type, size, context), frozenset(roles), TODAY)


def refusal(**kwargs) -> TicketRefusal:
    with pytest.raises(TicketRefused) as caught:
        plan(**kwargs)
    return caught.value.code


def test_ticket_size_is_the_declared_size_within_the_kind_limit():
    assert plan("avatar", size=1234).max_bytes == 1234
    assert refusal(kind="avatar", size=KINDS["avatar"].max_size + 1) == TicketRefusal.TOO_LARGE


def test_ticket_refusals_have_stable_codes():
    assert refusal(kind="selfie") == TicketRefusal.INVALID_REQUEST
    assert refusal(kind="avatar", content_type="image/gif") == TicketRefusal.UNSUPPORTED_TYPE
    assert refusal(kind="workout_photo") == TicketRefusal.INVALID_REQUEST  # no workout_id
    assert refusal(kind="workout_photo", workout_id="../../etc") == TicketRefusal.INVALID_REQUEST
    assert refusal(kind="food_image", meal_date="yesterday") == TicketRefusal.INVALID_REQUEST


def test_content_type_is_normalised():
    assert plan("avatar", content_type=" Image/PNG ").content_type == "image/png"


def test_food_images_default_to_todays_meal():
    assert plan("food_image").context == {"meal_date": "2026-11-24"}


def test_key_layout_per_kind():
    assert temp_key(UID) == f"temp/{UID}"
    assert final_key("avatar", Visibility.PUBLIC, "u1", UID, "jpg", {}) == f"public/user_u1/profile/{UID}.jpg"
    assert (
        final_key("workout_photo", Visibility.PRIVATE, "u1", UID, "jpg", {"workout_id": "w9"})
        == f"private/user_u1/workouts/w9/{UID}.jpg"
    )
    assert (
        final_key("food_image", Visibility.PUBLIC, "u1", UID, "jpg", {"meal_date": "2026-01-31"})
        == f"public/user_u1/nutrition/20260131/{UID}.jpg"
    )


def test_only_broker_issued_temp_keys_map_to_uploads():
    assert upload_id_from_temp_key(f"temp/{UID}") == UID
    assert upload_id_from_temp_key(f"public/{UID}") is None
    assert upload_id_from_temp_key("temp/") is None
    assert upload_id_from_temp_key("temp/a/b") is None


def test_state_machine_allows_the_upload_life_and_nothing_backwards():
    life = [S.PENDING, S.UPLOADED, S.PROCESSING, S.READY, S.DELETED]
    for current, target in itertools.pairwise(life):
        assert can_move(current, target)
    assert not can_move(S.READY, S.PROCESSING)  # a replayed job changes nothing
    assert not can_move(S.REJECTED, S.READY)
    assert not can_move(S.UPLOADED, S.UPLOADED)  # the same event twice
    assert can_move(S.FAILED, S.PROCESSING)  # ops retry
    assert can_move(S.EXPIRED, S.UPLOADED)  # a late event still counts


def test_the_key_layout_refuses_segments_the_rules_did_not_allow() -> None:
    for context in (
        {"workout_id": "w1\n"},
        {"workout_id": "../x"},
        {"workout_id": "a/b"},
        {"workout_id": ""},
    ):
        with pytest.raises(UnsafeKeySegment):
            final_key("workout_photo", Visibility.PRIVATE, "u1", UID, "jpg", context)
    with pytest.raises(UnsafeKeySegment):
        final_key("avatar", Visibility.PUBLIC, "u1/..", UID, "jpg", {})


def test_context_ids_must_match_in_full() -> None:
    assert CONTEXT_ID.fullmatch("w1") and not CONTEXT_ID.fullmatch("w1\n")


def test_document_links_download_under_the_original_name_whatever_its_characters():
    from app.domain.documents import attachment_disposition

    header = attachment_disposition('Plan "Woche 1" \u2013 Übungen.pdf')
    assert header == (
        'attachment; filename="Plan _Woche 1_  Ubungen.pdf"; '
        "filename*=UTF-8''Plan%20%22Woche%201%22%20%E2%80%93%20%C3%9Cbungen.pdf"
    )
    assert (
        attachment_disposition(None) == "attachment; filename=\"document.pdf\"; filename*=UTF-8''document.pdf"
    )
    assert attachment_disposition("训练计划.pdf").startswith('attachment; filename="document.pdf"; ')
