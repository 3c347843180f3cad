"""Prometheus metrics of the whole service, kept in Redis so any API process can report every process's.

Why Redis and not prometheus-client's multiprocess mode: the counters are written by several gunicorn
processes *and* by RQ workers that may run on other hosts. Multiprocess mode aggregates files in one local
directory, so an API host's `/metrics` would never see a worker elsewhere; and every processing attempt runs
in a child process of its own (`workers.sandbox`), which would leave files per pid with no hook to reap them. Redis is already the one thing
every API process and worker shares. A recording is one pipelined round trip of `HINCRBY`/`HINCRBYFLOAT`
(atomic and commutative, so concurrent writers never lose counts); a scrape of any API reads the totals with
one pipeline (`RedisCollector`). Totals survive restarts of any process, so there are no spurious counter
resets; deleting the `<namespace>:metrics:*` keys looks to Prometheus like an ordinary reset.

Layout: keys start with `BROKER_REDIS_NAMESPACE` (default `broker`), so deployments (or test sessions) sharing
one Redis keep their own numbers. A counter is a hash `<namespace>:metrics:<name>` whose fields are the JSON list of label values; a
histogram is `…:<name>:buckets` (fields: label values plus the bucket's upper bound; per-bucket, not
cumulative, counts, so an observation is one `HINCRBY`) and `…:<name>:sum`.

The API's own counters (tickets issued and refused, events received) do not cost a request a round trip:
they wait in the process (`PendingCounts`) and go to Redis in the same script call as the next ticket's rate
limit check, else within `FLUSH_SECONDS` from a background thread, and always before this process answers a
scrape. Workers write at once: a job is not a hot path, and a worker may be killed at any moment.

Metrics must never fail a request or a job: every recorder swallows and logs its errors, and after a failed
write this process skips writes to that Redis for `PAUSE_AFTER_FAILURE_SECONDS`, so a Redis outage costs one
connect timeout per pause, not one per request.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from rq import Worker

from app import ops

if TYPE_CHECKING:
    from redis.client import Pipeline

    from app.services import Services

log = logging.getLogger(__name__)
P = ParamSpec("P")

PAUSE_AFTER_FAILURE_SECONDS = 10.0
FLUSH_SECONDS = 1.0  # the longest an API counter waits in its process before reaching Redis
# Seconds: from a small image's stages (milliseconds) to a large video's (minutes; the job timeout is 600 s).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class CounterDef:
    name: str  # without the `_total` suffix the exposition adds
    documentation: str
    labels: tuple[str, ...]

    def key(self, namespace: str) -> str:
        return f"{namespace}:metrics:{self.name}"


@dataclass(frozen=True)
class HistogramDef:
    name: str
    documentation: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = DURATION_BUCKETS

    def bucket_key(self, namespace: str) -> str:
        return f"{namespace}:metrics:{self.name}:buckets"

    def sum_key(self, namespace: str) -> str:
        return f"{namespace}:metrics:{self.name}:sum"


TICKETS_ISSUED = CounterDef("broker_tickets_issued", "Upload tickets issued, by media kind.", ("kind",))
TICKETS_REFUSED = CounterDef(
    "broker_tickets_refused", "Ticket requests answered with a 4xx, by error code.", ("code",)
)
EVENTS = CounterDef(
    "broker_events",
    "S3 events received, by source (sns, webhook) and outcome: queued, duplicate, ignored (per record); "
    "refused (sender not verified), unavailable (answered 503 for the sender to retry) (per delivery).",
    ("source", "outcome"),
)
JOBS = CounterDef(
    "broker_jobs",
    "Processing attempts ended, by the stage they ended in, outcome (ready, rejected, retry, failed) and "
    "code (the rejection code, or the exception type of a retry or failure).",
    ("stage", "outcome", "code"),
)
JOB_SECONDS = HistogramDef(
    "broker_job_duration_seconds", "Wall time of one processing attempt, by outcome.", ("outcome",)
)
STAGE_SECONDS = HistogramDef(
    "broker_job_stage_duration_seconds", "Wall time of each completed stage of an attempt.", ("stage",)
)
PROCESSING_CPU_SECONDS = HistogramDef(
    "broker_processing_cpu_seconds",
    "CPU seconds one attempt cost in its sandbox processes (the decoders' share of a job), by processing "
    "(image, pdf, video) and outcome: what an upload of each kind really costs.",
    ("processing", "outcome"),
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
)
COUNTERS = (TICKETS_ISSUED, TICKETS_REFUSED, EVENTS, JOBS)
HISTOGRAMS = (JOB_SECONDS, STAGE_SECONDS, PROCESSING_CPU_SECONDS)
_PROCESSING_STAGES = ("image", "pdf", "video")

_paused_until: dict[int, float] = {}  # id(Redis client) -> monotonic time writes resume


def _never_raises(recorder: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(recorder)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            recorder(*args, **kwargs)
        except Exception:
            log.warning("metric not recorded", extra={"stage": "metrics"}, exc_info=True)

    return wrapper


def _write(services: Services, commands: Callable[[Pipeline, str], None]) -> bool:
    """True once written; False when skipped or failed (the store is paused or down)."""
    redis = services.redis
    if time.monotonic() < _paused_until.get(id(redis), 0.0):
        return False
    try:
        with redis.pipeline(transaction=False) as pipe:
            commands(pipe, services.settings.redis_namespace)
            pipe.execute()
        return True
    except Exception as error:
        _paused_until[id(redis)] = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
        log.warning(
            "metrics store unavailable; metric writes paused",
            extra={"stage": "metrics", "pause_seconds": PAUSE_AFTER_FAILURE_SECONDS, "error": str(error)},
        )
        return False


def _field(values: Sequence[str]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def _inc(pipe: Pipeline, ns: str, counter: CounterDef, labels: Sequence[str], amount: int = 1) -> None:
    pipe.hincrby(counter.key(ns), _field(labels), amount)


def _observe(pipe: Pipeline, ns: str, histogram: HistogramDef, labels: Sequence[str], seconds: float) -> None:
    bound = next((bound for bound in histogram.buckets if seconds <= bound), math.inf)
    pipe.hincrby(histogram.bucket_key(ns), _field([*labels, floatToGoString(bound)]), 1)
    pipe.hincrbyfloat(histogram.sum_key(ns), _field(labels), seconds)


# --- recording (API) ---------------------------------------------------------------------------------------
Increment = tuple[str, str, int]  # hash key, field, amount: one HINCRBY


class PendingCounts:
    """Counter increments recorded by this process and not yet in Redis (see the module's docstring)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._lock = threading.Lock()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._flusher: threading.Thread | None = None
        self._stopped = threading.Event()

    def add(self, counter: CounterDef, labels: Sequence[str], amount: int = 1) -> None:
        key = counter.key(self._services.settings.redis_namespace)
        with self._lock:
            self._counts[(key, _field(labels))] += amount
            if self._flusher is None:  # started lazily: in the process that records, after any fork
                self._flusher = threading.Thread(target=self._flush_often, name="metrics-flush", daemon=True)
                self._flusher.start()
                # A process that exits normally delivers what it holds; one that is killed loses at most
                # its last FLUSH_SECONDS of API counters.
                atexit.register(self.stop)

    def take(self) -> list[Increment]:
        """Everything pending, now owed by the caller: it writes it, or gives it back."""
        with self._lock:
            taken = [(key, name, amount) for (key, name), amount in self._counts.items()]
            self._counts.clear()
        return taken

    def give_back(self, taken: Iterable[Increment]) -> None:
        """Counts a write failed to deliver wait for the next one (bounded: one entry per label set)."""
        with self._lock:
            for key, name, amount in taken:
                self._counts[(key, name)] += amount

    def flush(self) -> None:
        taken = self.take()
        if taken and not _write(self._services, lambda pipe, _ns: _hincrby_all(pipe, taken)):
            self.give_back(taken)

    def stop(self) -> None:
        self._stopped.set()
        self.flush()

    def _flush_often(self) -> None:
        while not self._stopped.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:
                log.warning("metrics not flushed", extra={"stage": "metrics"}, exc_info=True)


def _hincrby_all(pipe: Pipeline, increments: Iterable[Increment]) -> None:
    for key, name, amount in increments:
        pipe.hincrby(key, name, amount)


@_never_raises
def ticket_issued(services: Services, kind: str) -> None:
    services.pending_metrics.add(TICKETS_ISSUED, [kind])


@_never_raises
def ticket_refused(services: Services, code: str) -> None:
    services.pending_metrics.add(TICKETS_REFUSED, [code])


@_never_raises
def events_received(services: Services, source: str, outcomes: Iterable[str]) -> None:
    """One count per outcome: per S3 record for handled deliveries, one for a refused or 503 delivery."""
    for outcome, count in collections.Counter(outcomes).items():
        services.pending_metrics.add(EVENTS, [source, outcome], count)


# --- recording (workers) -----------------------------------------------------------------------------------
@dataclass
class _Attempt:
    services: Services
    started: float
    stage: str = "start"  # until the first `job_stage`
    stage_started: float = 0.0
    completed: list[tuple[str, float]] = field(default_factory=list)


# The attempt being processed. A context variable, so the pipeline's stages can mark their start with one
# line each, without a timer threaded through every stage's signature; a worker runs one job at a time.
_attempt: ContextVar[_Attempt | None] = ContextVar("broker_metrics_attempt", default=None)


@_never_raises
def job_started(services: Services) -> None:
    now = time.monotonic()
    _attempt.set(_Attempt(services, now, stage_started=now))


@_never_raises
def job_stage(stage: str) -> None:
    """The attempt enters `stage`; the previous stage is complete (its duration is kept for the end)."""
    attempt = _attempt.get()
    if attempt is None:
        return
    now = time.monotonic()
    if attempt.stage != "start":
        attempt.completed.append((attempt.stage, now - attempt.stage_started))
    attempt.stage, attempt.stage_started = stage, now


@_never_raises
def job_finished(outcome: str, code: str = "", cpu_seconds: float = 0.0) -> None:
    """Record the attempt in one round trip: its outcome, its duration and its completed stages', and the CPU
    seconds its processing cost in the sandbox (when it got that far)."""
    attempt = _attempt.get()
    if attempt is None:
        return
    _attempt.set(None)
    now = time.monotonic()
    stages = list(attempt.completed)
    if outcome == "ready" and attempt.stage != "start":  # the last stage completed too
        stages.append((attempt.stage, now - attempt.stage_started))

    reached = [stage for stage, _ in attempt.completed] + [attempt.stage]
    processing = next((stage for stage in reached if stage in _PROCESSING_STAGES), None)

    def commands(pipe: Pipeline, ns: str) -> None:
        _inc(pipe, ns, JOBS, [attempt.stage, outcome, code])
        _observe(pipe, ns, JOB_SECONDS, [outcome], now - attempt.started)
        for stage, seconds in stages:
            _observe(pipe, ns, STAGE_SECONDS, [stage], seconds)
        if processing:
            _observe(pipe, ns, PROCESSING_CPU_SECONDS, [processing, outcome], cpu_seconds)

    _write(attempt.services, commands)


# --- exposition ----------------------------------------------------------------------------------------------
class RedisCollector(Collector):
    """What every process recorded, plus queue depths and worker count read from Redis at scrape time.

    If Redis cannot be read, the scrape still answers, with `broker_metrics_store_up 0` only."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        ns = self.services.settings.redis_namespace
        try:
            stored = self._read_stored(ns)
            depths = ops.queue_depths(self.services)
            worker_count = Worker.count(connection=self.services.redis)
        except Exception as error:
            log.warning("metrics store unreadable", extra={"stage": "metrics", "error": str(error)})
            yield GaugeMetricFamily("broker_metrics_store_up", "Whether Redis could be read.", value=0)
            return
        for counter in COUNTERS:
            family = CounterMetricFamily(counter.name, counter.documentation, labels=counter.labels)
            for labels, value in _decoded(stored[counter.key(ns)], len(counter.labels)):
                family.add_metric(labels, float(value))
            yield family
        for histogram in HISTOGRAMS:
            yield _histogram_family(
                histogram, stored[histogram.bucket_key(ns)], stored[histogram.sum_key(ns)]
            )
        queue_jobs = GaugeMetricFamily(
            "broker_queue_jobs", "Jobs per queue and state, read at scrape time.", labels=("queue", "state")
        )
        for queue in depths:
            for state, count in queue.by_state().items():
                queue_jobs.add_metric([queue.queue, state], count)
        yield queue_jobs
        timeouts = GaugeMetricFamily(
            "broker_queue_job_timeout_seconds",
            "How long one processing job of each queue may run.",
            labels=("queue", "processing"),
        )
        for queue in depths:
            if queue.processing and queue.job_timeout_seconds:
                timeouts.add_metric([queue.queue, queue.processing], queue.job_timeout_seconds)
        yield timeouts
        yield GaugeMetricFamily("broker_workers", "RQ workers registered in Redis.", value=worker_count)
        yield GaugeMetricFamily("broker_metrics_store_up", "Whether Redis could be read.", value=1)

    def _read_stored(self, ns: str) -> dict[str, dict[bytes, bytes]]:
        keys = [c.key(ns) for c in COUNTERS] + [
            k for h in HISTOGRAMS for k in (h.bucket_key(ns), h.sum_key(ns))
        ]
        with self.services.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            return dict(zip(keys, pipe.execute(), strict=True))


def _decoded(fields: dict[bytes, bytes], arity: int) -> Iterator[tuple[list[str], bytes]]:
    """(label values, stored value) per field; fields of another label set (an older layout) are skipped."""
    for raw, value in fields.items():
        try:
            labels = json.loads(raw)
        except ValueError:
            continue
        if isinstance(labels, list) and len(labels) == arity:
            yield [str(label) for label in labels], value


def _histogram_family(
    histogram: HistogramDef, buckets: dict[bytes, bytes], sums: dict[bytes, bytes]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(histogram.name, histogram.documentation, labels=histogram.labels)
    counts: dict[tuple[str, ...], dict[str, int]] = collections.defaultdict(dict)
    for values, count in _decoded(buckets, len(histogram.labels) + 1):
        counts[tuple(values[:-1])][values[-1]] = int(count)
    totals = {tuple(labels): float(value) for labels, value in _decoded(sums, len(histogram.labels))}
    bounds = [floatToGoString(bound) for bound in (*histogram.buckets, math.inf)]
    for labels, per_bound in sorted(counts.items()):
        cumulative, running = [], 0
        for bound in bounds:
            running += per_bound.get(bound, 0)
            cumulative.append((bound, float(running)))
        family.add_metric(list(labels), cumulative, totals.get(labels, 0.0))
    return family
