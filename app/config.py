"""Settings, read once from `BROKER_*` environment variables (pydantic-settings).

Secrets have no default that could reach production: with `BROKER_ENV=production`, a missing JWT secret (or
JWKS URL) or webhook token stops start-up instead of silently accepting forged tokens.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_NAMESPACE = "broker"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_", extra="ignore")

    env: str = "development"  # "production" turns missing secrets into start-up errors
    database_url: str = "sqlite:///var/broker.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A queue per kind of processing, so photos stay fast while a 1 GiB video runs on its own workers.
    queue_name: str = "uploads"  # images, and the follow-up jobs and sweeps
    video_queue_name: str = "videos"
    document_queue_name: str = "documents"

    s3_endpoint_url: str | None = None  # None = AWS itself
    # Where the broker's own S3 requests go when that differs from where clients are sent (a private network
    # address, a VPC endpoint; locally moto, past the gate); None = `s3_endpoint_url`.
    s3_internal_endpoint_url: str | None = None
    s3_bucket: str = "upload-broker"
    # Optional bucket for `public/` media only (the CDN's origin); unset = `public/` in `s3_bucket`.
    s3_public_bucket: str | None = None
    s3_region: str = "us-east-1"
    public_base_url: str | None = None  # CDN in front of public/; else the bucket's own URL

    jwt_secret: str | None = None
    jwt_jwks_url: str | None = None
    # When set, tokens must carry this `aud` / `iss` (the app server's values); unset = not checked.
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    webhook_token: str | None = None
    # Web origins allowed to call the API from a browser (CORS), comma-separated; none by default.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    sns_topic_arn: str | None = None
    sns_cert_hosts: Annotated[tuple[str, ...], NoDecode] = ()  # default: sns.<region>.amazonaws.com
    # Local stack only: fetch certificates of allow-listed hosts from this endpoint (path kept), so the
    # signature is still verified against a real certificate.
    sns_cert_endpoint_url: str | None = None
    sns_ca_bundle: str | None = None  # PEM roots SNS's signing certificate must chain to; unset = system's

    ticket_ttl_seconds: int = Field(default=600, ge=1, le=900)  # the contract: a ticket lives <= 15 min
    # Resumable (S3 multipart) uploads: above this size, or when the client asks. Each presigned part URL
    # still lives `ticket_ttl_seconds`; the upload itself stays open `multipart_ttl_seconds` (a phone resumes
    # tomorrow), after which clean-up aborts it and the bucket's lifecycle rule does the same in production.
    multipart_threshold_bytes: int = Field(default=32 * 1024 * 1024, ge=5 * 1024 * 1024)
    multipart_part_size_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)
    multipart_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    private_url_ttl_seconds: int = Field(default=60, ge=1, le=3600)
    # Public keys carry the upload id and never change, so caches (the CDN, the app) may keep them for good.
    public_cache_control: str = "public, max-age=31536000, immutable"
    max_image_pixels: int = 50_000_000

    # Per-user limits on tickets: a rate string ("60/minute", `limits` syntax), and an optional storage quota in bytes
    # (sum of the user's live media plus open tickets).
    ticket_rate_limit: str = "60/minute"
    storage_quota_bytes: int | None = None

    # Lifecycle. S3 events get lost (SNS gives up after 3 tries by default), so a reconcile sweep looks for
    # temp/ objects whose upload is still `pending` after `reconcile_after_seconds`, and for uploads stuck in
    # `uploaded`/`processing` longer than `stuck_after_seconds` (above the job timeout).
    temp_max_age_seconds: int = 24 * 3600
    reconcile_after_seconds: int = 300
    stuck_after_seconds: int = 1800
    # An upload in flight whose job is gone (Redis lost it) or was abandoned (its worker died) is re-queued
    # once it has been still this long: long enough for the webhook's own enqueue to land.
    lost_job_after_seconds: int = 60

    # Dotted path of the job run when a food image is ready (the food-recognition service); none by default.
    food_recognition_job: str | None = None

    # Transient failures (S3, DB) are retried by RQ with these delays, then the upload is `failed`.
    job_retry_intervals: Annotated[tuple[int, ...], NoDecode] = (10, 60, 300)
    job_timeout_seconds: int = 600  # an image job
    # Above the video attempt's own deadline (twice video_cpu_seconds, plus 5 s), plus fetch and promotion of 1 GiB.
    video_job_timeout_seconds: int = 4800
    document_job_timeout_seconds: int = 300

    # --- hard limits of one processing attempt (enforced by the OS; a breach is a rejection) -------------
    # A 12 MP photo takes ~0.15 s of CPU and ~20 MB; a 50 MP RGBA PNG, the worst the pixel limit admits for
    # PNG, ~3 s and ~210 MB. CPU: `too_complex` beyond; memory (private memory the attempt adds to the
    # worker's): `too_large_to_process` beyond, so the image stage stays under ~300 MB of RSS.
    image_cpu_seconds: int = Field(default=20, ge=1)
    image_memory_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024 * 1024)
    # Video: remux + poster + 720p of a 10-minute 4K clip on one core stays well inside 30 min of CPU; FFmpeg's
    # decoders and x264 get a budget for their frame buffers and thread stacks.
    video_cpu_seconds: int = Field(default=1800, ge=1)
    video_memory_bytes: int = Field(default=768 * 1024 * 1024, ge=64 * 1024 * 1024)
    video_codecs: Annotated[tuple[str, ...], NoDecode] = ("h264", "hevc")
    # PDF: parsing a 500-page plan takes well under a second; a crafted object graph must not take minutes.
    pdf_cpu_seconds: int = Field(default=30, ge=1)
    pdf_memory_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024 * 1024)
    pdf_max_pages: int = Field(default=500, ge=1)
    # A 500-page tagged document has a few tens of thousands of objects; beyond this, `too_complex`.
    pdf_max_objects: int = Field(default=100_000, ge=100)
    # Attempts one sandbox process serves, each under the limits above, before a new one replaces it
    # (`workers/sandbox_host.py`): a fresh process costs a 12 MP photo ~50 ms of CPU on top of its ~130 ms.
    # A process that refused a file, crashed or breached a limit never serves another. 1: a fresh process
    # for every attempt, the strictest isolation.
    sandbox_attempts_per_process: int = Field(default=50, ge=1)

    # --- HTTP hardening -------------------------------------------------------------------------------------
    # Largest request body any route reads; bigger ones are refused with 413 before a byte is parsed.
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)

    # --- the browser demo page ----------------------------------------------------------------------------------
    # The built bundle of `web/` (`web/dist`), served at /demo when set. `broker dev` sets it to this checkout's
    # bundle; unset (production) the route does not exist. The page is only a client of the public API.
    demo_dir: Path | None = None

    # --- one Redis, several deployments ---------------------------------------------------------------------
    # Prefix of every key the broker itself writes to Redis (metrics, locks, rate limits, the scheduler's
    # lease), so stacks sharing a Redis do not count into each other's numbers. RQ's own keys are separated
    # by queue names: with a namespace other than the default, the queues not named explicitly are
    # `<namespace>-uploads`, `<namespace>-videos`, `<namespace>-documents`, so one stack's worker never takes
    # another's jobs.
    redis_namespace: str = DEFAULT_NAMESPACE

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: dict[str, object]) -> dict[str, object]:
        """Comma-separated env values for the tuple settings."""
        for name in ("sns_cert_hosts", "job_retry_intervals", "video_codecs", "cors_origins"):
            raw = data.get(name)
            if isinstance(raw, str):
                data[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
        return data

    @model_validator(mode="after")
    def _queues_in_the_namespace(self) -> Self:
        if self.redis_namespace != DEFAULT_NAMESPACE:
            for name in ("queue_name", "video_queue_name", "document_queue_name"):
                if name not in self.model_fields_set:
                    setattr(self, name, f"{self.redis_namespace}-{getattr(self, name)}")
        return self

    @model_validator(mode="after")
    def _require_secrets_in_production(self) -> Self:
        if self.env != "production":
            return self
        missing = []
        if not (self.jwt_secret or self.jwt_jwks_url):
            missing.append("BROKER_JWT_SECRET or BROKER_JWT_JWKS_URL")
        if not (self.webhook_token or self.sns_topic_arn):
            missing.append("BROKER_WEBHOOK_TOKEN or BROKER_SNS_TOPIC_ARN")
        if missing:
            raise ValueError(f"production settings need {', '.join(missing)}")
        return self

    @property
    def trusted_sns_cert_hosts(self) -> tuple[str, ...]:
        return self.sns_cert_hosts or (f"sns.{self.s3_region}.amazonaws.com",)


def settings_error_line(error: ValidationError) -> str:
    """One line naming every bad setting by its environment variable, for start-up errors."""
    parts = []
    for item in error.errors(include_url=False):
        name = "_".join(str(part) for part in item["loc"]).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"BROKER_{name}: {message}" if name else message)
    return "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` and pass them explicitly."""
    return Settings()
