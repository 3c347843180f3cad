"""Workout videos and exercise demos over real interfaces: API over HTTP, the local S3 through its gate, SNS
to the webhook, Redis (the `videos` queue), a real RQ worker, PostgreSQL when it answers. Videos are made in
the test with PyAV (`tests/videos.py`): small, so the suite stays fast."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
import requests
from rq.job import Job

from app.queueing import processing_job_id
from tests import images, videos
from tests.conftest import client_for
from tests.support import BrokerClient

WORKOUT = {"context": {"workout_id": "leg-day"}}


def upload_video(client: BrokerClient, path: Path, kind: str = "workout_video", **extra) -> str:
    data = path.read_bytes()
    upload_id = client.upload(kind, extra.pop("content_type", "video/mp4"), data, **(extra or WORKOUT))
    client.wait_status(upload_id, {"uploaded"})
    return upload_id


def fetch(url: str, path: Path) -> Path:
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text
    path.write_bytes(response.content)
    return path


def test_an_iphone_video_is_remuxed_without_its_location_and_gets_a_poster(
    alice, drain, services, settings, tmp_path
):
    source = videos.clip(  # what an iPhone writes: QuickTime, the place in ©xyz and Apple's location key
        tmp_path / "squat.mov",
        container="mov",
        audio="aac",
        metadata={"location": videos.LOCATION, videos.APPLE_LOCATION_KEY: videos.LOCATION},
        options={"movflags": "use_metadata_tags"},
    )
    assert videos.LOCATION.encode() in source.read_bytes()
    upload_id = upload_video(alice, source, content_type="video/quicktime", **WORKOUT)
    job = Job.fetch(processing_job_id(upload_id), connection=services.redis)
    assert job.origin == settings.video_queue_name  # videos never hold up the photo queue
    drain()

    status = alice.status(upload_id).json()
    assert status["status"] == "ready", status
    media = alice.media(upload_id).json()
    assert media["content_type"] == "video/mp4"
    assert (media["width"], media["height"]) == (320, 240)
    assert media["duration_seconds"] == pytest.approx(1.5, abs=0.1)
    assert media["codecs"] == "h264+aac"
    assert media["url_expires_at"]  # private: presigned for 60 s
    assert set(media["variants"]) == {"poster"}  # H.264 no larger than 720p: no rendition needed
    main = fetch(media["url"], tmp_path / "main.mp4")
    assert videos.LOCATION.encode() not in main.read_bytes()
    assert b"\xa9xyz" not in main.read_bytes() and b"com.apple.quicktime" not in main.read_bytes()
    assert videos.boxes(main).index(b"moov") < videos.boxes(main).index(b"mdat")  # faststart
    with av.open(str(main)) as played:
        assert not played.metadata.get("location")
        assert [s.type for s in played.streams] == ["video", "audio"]
    poster = media["variants"]["poster"]
    assert poster["content_type"] == "image/jpeg" and poster["url_expires_at"]
    assert requests.get(poster["url"], timeout=10).content[:3] == b"\xff\xd8\xff"


def test_a_rotated_hevc_video_gets_an_upright_h264_rendition(alice, drain, tmp_path):
    source = videos.clip(tmp_path / "hevc.mp4", codec="libx265", rotation=90)
    upload_id = upload_video(alice, source)
    drain()

    media = alice.media(upload_id).json()
    assert (media["width"], media["height"]) == (240, 320), media  # rotation applied
    assert media["codecs"] == "hevc"  # no sound
    rendition = media["variants"]["720p"]
    assert (rendition["width"], rendition["height"]) == (240, 320)
    with av.open(str(fetch(rendition["url"], tmp_path / "720p.mp4"))) as played:
        assert played.streams.video[0].codec_context.name == "h264"


@pytest.mark.parametrize("case", ["jpeg_as_mp4", "truncated", "eleven_minutes"])
def test_bad_videos_are_rejected_with_their_code(alice, drain, services, tmp_path, case):
    if case == "jpeg_as_mp4":
        path, code = videos.jpeg(tmp_path / "photo.jpg"), "type_mismatch"
    elif case == "truncated":
        path, code = videos.truncated(videos.clip(tmp_path / "full.mp4"), tmp_path / "cut.mp4"), "corrupt"
    else:
        path = videos.clip(tmp_path / "long.mp4", size=(64, 64), seconds=660, fps=1)
        code = "video_too_long"
    upload_id = upload_video(alice, path)
    drain()

    status = alice.status(upload_id).json()
    assert (status["status"], status["error"]["code"]) == ("rejected", code), status
    assert services.storage.head(f"temp/{upload_id}") is None


def test_staff_publish_exercise_demos_as_public_video_or_image(api, drain, tmp_path):
    staff = client_for(api, roles=["staff"])
    demo = {"context": {"exercise_id": "goblet-squat"}}
    video_id = upload_video(staff, videos.clip(tmp_path / "demo.mp4"), "exercise_demo", **demo)
    assert client_for(api).request_ticket("exercise_demo", "video/mp4", 1000, **demo).status_code == 403
    drain()

    media = staff.media(video_id).json()
    assert media["url"].split("?")[0].endswith(f"exercises/goblet-squat/{video_id}.mp4")
    assert "url_expires_at" not in media  # public: the CDN / bucket URL
    assert "url_expires_at" not in media["variants"]["poster"]
    assert requests.get(media["variants"]["poster"]["url"], timeout=10).status_code == 200

    photo_id = staff.upload("exercise_demo", "image/jpeg", images.jpeg(800, 600), **demo)
    staff.wait_status(photo_id, {"uploaded"})
    drain()
    photo = staff.media(photo_id).json()
    assert photo["url"].endswith(f"exercises/goblet-squat/{photo_id}.jpg") and "variants" not in photo


@pytest.mark.parametrize("case", ["iphone_reordered_hevc", "first_sample_duration_zero", "mp3_format_change"])
def test_phone_videos_ffmpeg_reads_oddly_end_ready(alice, drain, tmp_path, case):
    if case == "iphone_reordered_hevc":  # read back with pts < dts, as iPhone HDR and spatial clips are
        path, codecs = videos.reordered_short_clip(tmp_path / "hdr.mov"), "hevc+aac"
    elif case == "first_sample_duration_zero":
        path, codecs = videos.zero_first_sample_duration(tmp_path / "zero.mp4"), "h264+aac"
    else:
        path, codecs = videos.mp3_changing_format(tmp_path / "concat.mov"), "h264+aac"
    upload_id = upload_video(alice, path, content_type="video/quicktime")
    drain()

    status = alice.status(upload_id).json()
    assert status["status"] == "ready", status
    media = alice.media(upload_id).json()
    assert media["codecs"] == codecs
    with av.open(str(fetch(media["url"], tmp_path / "main.mp4"))) as played:
        assert sum(1 for _ in played.decode(video=0)) > 0


def test_a_location_in_sei_user_data_is_not_served(alice, drain, tmp_path):
    plain = videos.clip(tmp_path / "plain.mp4", codec="libx265", audio="aac")
    source = videos.with_user_data_sei(plain, tmp_path / "sei.mp4", videos.LOCATION)
    upload_id = upload_video(alice, source)
    drain()

    media = alice.media(upload_id).json()
    for url in (media["url"], media["variants"]["720p"]["url"]):
        served = fetch(url, tmp_path / "served.mp4")
        assert videos.LOCATION.encode() not in served.read_bytes()
        assert videos.sei_units(served) == []


def test_a_codec_without_a_decoder_is_rejected_by_name(alice, drain, tmp_path):
    source = videos.unknown_codec(videos.clip(tmp_path / "clip.mp4"), tmp_path / "dolby-av1.mp4")
    upload_id = upload_video(alice, source)
    drain()

    status = alice.status(upload_id).json()
    assert (status["status"], status["error"]["code"]) == ("rejected", "unsupported_codec"), status
    assert "dav1" in status["error"]["message"]
