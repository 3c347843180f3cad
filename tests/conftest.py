"""Shared fixtures: real Redis, SQLite and (when it answers) PostgreSQL, the local S3 + SNS, the API over HTTP.

Services the machine already runs are used (Redis on 6379, PostgreSQL on 5432); what is missing is started
(a private redis-server) or left out (PostgreSQL variants), so a bare machine still runs the suite.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app import create_app
from app.auth import mint_token
from app.config import Settings
from app.devstack.local_s3 import (
    LocalS3,
    create_bucket,
    create_topic,
    local_credentials_env,
    start_local_s3,
    wire_notifications,
)
from app.devstack.processes import ManagedProcess, port_answers
from app.devstack.redis_server import redis_answers, start_redis
from app.migrate import upgrade
from app.services import Services
from tests.support import BrokerClient, ServedApp
from workers import context
from workers.worker import InProcessWorker

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MACHINE_REDIS = "redis://127.0.0.1:6379/13"  # a database of its own; each session also has its own queue
JWT_SECRET = "test-jwt-secret-not-for-production"
WEBHOOK_TOKEN = "test-webhook-token"


def postgres_available() -> bool:
    return port_answers("127.0.0.1", 5432)


@pytest.fixture(scope="session", autouse=True)
def aws_env() -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(local_credentials_env())
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_url(logs_dir: Path) -> Iterator[str]:
    process: ManagedProcess | None = None
    url = MACHINE_REDIS
    if not redis_answers(url):
        url, process = start_redis(logs_dir)
    yield url
    if process:
        process.stop()


def _postgres_schema_url() -> Iterator[str]:
    schema = f"broker_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


DATABASES = ["sqlite", "postgresql"] if postgres_available() else ["sqlite"]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite always, PostgreSQL too when it answers."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'broker.db'}"
        upgrade(url)
        yield url
    else:
        for url in _postgres_schema_url():
            upgrade(url)
            yield url


@pytest.fixture(scope="session")
def stack_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The pipeline's database: PostgreSQL when it answers (as in production), else SQLite."""
    if postgres_available():
        for url in _postgres_schema_url():
            upgrade(url)
            yield url
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'broker.db'}"
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def local_s3(logs_dir: Path) -> Iterator[LocalS3]:
    stack = start_local_s3(logs_dir)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def settings(local_s3: LocalS3, redis_url: str, stack_database_url: str) -> Settings:
    session_id = uuid.uuid4().hex[:8]
    bucket = f"broker-test-{session_id}"
    create_bucket(local_s3, bucket)
    return Settings(
        # Concurrent test sessions never take each other's jobs.
        queue_name=f"uploads-{session_id}",
        video_queue_name=f"videos-{session_id}",
        document_queue_name=f"documents-{session_id}",
        redis_namespace=f"broker-test-{session_id}",  # nor count into each other's metrics
        database_url=stack_database_url,
        redis_url=redis_url,
        s3_endpoint_url=local_s3.s3_url,
        s3_internal_endpoint_url=local_s3.moto_url,  # as `broker dev` runs
        s3_bucket=bucket,
        s3_region="us-east-1",
        jwt_secret=JWT_SECRET,
        webhook_token=WEBHOOK_TOKEN,
        sns_topic_arn=create_topic(local_s3, bucket),
        sns_cert_endpoint_url=local_s3.moto_url,
        job_retry_intervals=(1, 1),
        # A video attempt's deadline (twice this, plus 5 s) stays under the tests' own timeout: a stuck
        # child fails its test with a stack instead of holding the run for an hour.
        video_cpu_seconds=120,
    )


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    services = Services(settings)
    context.use_services(services)
    yield services
    context.use_services(None)
    for queue in services.processing_queues:
        queue.delete(delete_jobs=True)
    services.close()


@pytest.fixture(scope="session")
def api(services: Services, local_s3: LocalS3, settings: Settings) -> Iterator[ServedApp]:
    served = ServedApp(create_app(services=services))
    wire_notifications(
        local_s3, settings.s3_bucket, settings.sns_topic_arn or "", f"{served.url}/v1/events/s3"
    )
    yield served
    served.stop()


@pytest.fixture
def serve_with(settings):
    """Serve the API with some settings changed; everything else shared with the session."""
    started: list[ServedApp] = []

    def serve(**changes) -> ServedApp:
        served = ServedApp(create_app(services=Services(settings.model_copy(update=changes))))
        started.append(served)
        return served

    yield serve
    for served in started:
        served.stop()
        served.services.close()


def client_for(api: ServedApp, user_id: str | None = None, roles: list[str] | None = None) -> BrokerClient:
    return BrokerClient(api.url, mint_token(JWT_SECRET, user_id or str(uuid.uuid4()), roles))


@pytest.fixture
def alice(api: ServedApp) -> BrokerClient:
    return client_for(api)


@pytest.fixture
def bob(api: ServedApp) -> BrokerClient:
    return client_for(api)


@pytest.fixture
def drain(services: Services):
    """Run every queued job to completion with a real RQ worker (in this process, burst mode)."""

    def run() -> None:
        worker = InProcessWorker(services.processing_queues, connection=services.redis)
        worker.work(burst=True, with_scheduler=False)

    return run
