"""What processors hand back, and where variants are stored."""

from __future__ import annotations

import pytest

from app.domain.keys import UnsafeKeySegment, variant_key
from workers.processing.outputs import OutputFile, Processed


def test_a_variant_sits_beside_its_main_file():
    main = "private/user_u1/workouts/w1/abc.mp4"
    assert variant_key(main, "poster", "jpg") == "private/user_u1/workouts/w1/abc.poster.jpg"
    assert variant_key(main, "720p", "mp4") == "private/user_u1/workouts/w1/abc.720p.mp4"
    with pytest.raises(UnsafeKeySegment):
        variant_key(main, "../x", "jpg")


def test_processed_outputs_travel_as_json_and_must_be_files_of_the_work_directory(tmp_path):
    video, poster = tmp_path / "video.mp4", tmp_path / "poster.jpg"
    video.write_bytes(b"v")
    poster.write_bytes(b"p")
    processed = Processed(
        main=OutputFile(video, "video/mp4", "mp4", 1280, 720),
        variants={"poster": OutputFile(poster, "image/jpeg", "jpg", 1200, 675)},
        duration_seconds=12.5,
    )

    assert Processed.from_json(processed.to_json(), tmp_path) == processed

    elsewhere = processed.to_json()
    elsewhere["variants"]["poster"]["path"] = "/etc/passwd"
    with pytest.raises(ValueError, match="not a file in"):
        Processed.from_json(elsewhere, tmp_path)
    missing = processed.to_json()
    missing["main"]["path"] = str(tmp_path / "gone.mp4")
    with pytest.raises(ValueError, match="not a file in"):
        Processed.from_json(missing, tmp_path)
