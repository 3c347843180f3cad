"""Tickets against the framework's own ceiling: `POST /v1/uploads` beside `GET /healthz`, on one real server.

Run from the repository root:

    .venv/bin/python -m bench.tickets [--rounds N] [--duration S] [--server gunicorn|waitress] [--threads N]
                                      [--workers N] [--json] [--profile PY_SPY] [--no-check]

What runs: `broker serve` as production runs it (gunicorn, 2 workers x 4 threads, JSON access and app logs
to a file) on 127.0.0.1, with every feature a ticket pays for switched on: HS256 JWTs (a few hundred users,
tokens rotated per request), the per-user rate limit on Redis (set high enough never to refuse: the bench
measures the cost of the check, not refusals), a storage quota (so the quota query runs), the `pending` row
in PostgreSQL, the ticket metrics in Redis. PostgreSQL is the machine's (127.0.0.1:5432, database `test`) in
a schema created and dropped by this run; Redis is the machine's (127.0.0.1:6379) in database 12, under a
namespace of this run, whose keys are deleted at the end. S3 is only a bucket name and the local stack's
credentials: presigning a POST is an HMAC computed in-process, no request reaches a store, so a running
S3 would add nothing to the measurement but a process competing for the same two cores.

The load generator is `wrk` (Debian: `apt-get install wrk`), 2 threads and 16 connections, with a Lua script
that signs each POST with the next user's token. Rounds alternate: /healthz, tickets, /healthz, tickets...
of the same duration, after one short warm-up of each, so a noisy neighbour slows both alike. Per endpoint
the report is the median over rounds of req/s, p50 and p99, the server's CPU per request (the server
processes' utime+stime from /proc over the round) and PostgreSQL's plus Redis's. wrk, the server, PostgreSQL
and Redis share the machine's cores (2 here): wrk's own CPU is reported, and so is what other processes used
meanwhile (a warning above 0.3 cores: the ratios then mean less; rerun).

Targets (exit status 1 when one is missed, unless --no-check): tickets >= 0.4x the /healthz req/s, ticket
p50 <= 3x the /healthz p50. Exit status 2 when the run is not valid (a non-2xx answer, a socket error, a
server that did not start).

--profile PATH_TO_PY_SPY adds one tickets round during which py-spy samples one gunicorn worker; the
collapsed stacks go to bench/out/tickets-profile.txt and the heaviest frames are printed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/tickets.py` puts bench/ on the path, not the repository
    sys.path.insert(0, str(REPO))

OUT_DIR = REPO / "bench" / "out"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/12"  # a database of its own (the tests use 13)
JWT_SECRET = "bench-tickets-secret"
USERS = 400
RATE_LIMIT = "100000/minute"  # per user; 400 users never reach it
QUOTA_BYTES = 100 * 1024**3  # configured (the quota query runs), never reached
BODY = {
    "kind": "workout_photo",
    "content_type": "image/jpeg",
    "size": 2_500_000,
    "filename": "IMG_0042.jpg",
    "context": {"workout_id": "w-20240611-run"},
}
WRK_THREADS, WRK_CONNECTIONS = 2, 16
WARMUP_SECONDS = 3
DEFAULT_WORKERS = 2  # `broker serve`'s own default on these 2-core hosts
MAX_ROUNDS, MAX_DURATION = 10, 30
BUSY_MACHINE_CORES = 0.3  # other processes' load above which the report carries a warning

# Targets from the brief.
MIN_TICKETS_TO_STATIC = 0.4
MAX_P50_TO_STATIC = 3.0

DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def post_script(tokens: list[str]) -> str:
    listed = ",\n".join(f'  "{token}"' for token in tokens)
    return f"""
local tokens = {{
{listed}
}}
local body = '{json.dumps(BODY)}'
local i = 0
setup = function(thread) end
init = function(args) i = math.random(#tokens) end
request = function()
  i = i % #tokens + 1
  return wrk.format("POST", "/v1/uploads", {{
    ["Authorization"] = "Bearer " .. tokens[i],
    ["Content-Type"] = "application/json",
  }}, body)
end
{DONE_LUA}
"""


# --- the machine --------------------------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def backing_pids() -> list[int]:
    """PostgreSQL's and Redis's processes: they serve the tickets too, so their CPU is not background."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "redis-server"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def children_of(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


# --- the service --------------------------------------------------------------------------------------------


@dataclass
class Stack:
    url: str
    server: subprocess.Popen[bytes]
    schema: str
    namespace: str
    user_prefix: str
    log_path: Path

    def server_pids(self) -> list[int]:
        return [self.server.pid, *children_of(self.server.pid)]

    def worker_pids(self) -> list[int]:
        return children_of(self.server.pid)


def create_schema(run: str) -> str:
    """A PostgreSQL schema of this run, migrated; dropped by `drop_schema`."""
    from sqlalchemy import create_engine, text

    from app.migrate import upgrade

    schema = f"bench_tickets_{run}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    upgrade(schema_url(schema))
    return schema


def schema_url(schema: str) -> str:
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def service_env(run: str, schema: str) -> dict[str, str]:
    """The service's settings for a run: every feature a ticket pays for switched on."""
    from app.devstack.local_s3 import local_credentials_env

    return {
        **local_credentials_env(),
        "BROKER_DATABASE_URL": schema_url(schema),
        "BROKER_REDIS_URL": REDIS_URL,
        "BROKER_REDIS_NAMESPACE": f"bench-tickets-{run}",
        "BROKER_S3_BUCKET": "bench-tickets",
        "BROKER_JWT_SECRET": JWT_SECRET,
        "BROKER_TICKET_RATE_LIMIT": RATE_LIMIT,
        "BROKER_STORAGE_QUOTA_BYTES": str(QUOTA_BYTES),
        "BROKER_LOG_LEVEL": "INFO",
    }


def delete_redis_keys(namespace: str, user_prefix: str) -> None:
    from redis import Redis

    redis = Redis.from_url(REDIS_URL)
    for pattern in (f"{namespace}:*", f"*{user_prefix}-*"):
        keys = list(redis.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            redis.delete(*keys[start : start + 500])
    redis.close()


def start_stack(
    server_kind: str, workdir: Path, threads: int | None = None, workers: int = DEFAULT_WORKERS
) -> Stack:
    from app.devstack.processes import free_port

    run = uuid.uuid4().hex[:8]
    schema = create_schema(run)
    port = free_port()
    env = {**os.environ, **service_env(run, schema), "BROKER_HTTP_SERVER": server_kind}
    env.pop("GUNICORN_CMD_ARGS", None)
    env.pop("GUNICORN_CONFIG", None)
    if threads is not None:
        env["GUNICORN_CMD_ARGS"] = f"--threads {threads}"
    log_path = workdir / "server.log"
    broker = Path(sys.executable).parent / "broker"
    command = [str(broker), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    stack = Stack(f"http://127.0.0.1:{port}", server, schema, f"bench-tickets-{run}", run, log_path)
    _wait_until_up(stack)
    return stack


def _wait_until_up(stack: Stack, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.server.poll() is not None:
            raise RuntimeError(f"server exited ({stack.server.returncode}); see {stack.log_path}")
        try:
            with urllib.request.urlopen(f"{stack.url}/healthz", timeout=1) as answer:
                if answer.status == 200 and len(stack.worker_pids()) >= 2:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not answer within {timeout:.0f} s; see {stack.log_path}")


def stop_stack(stack: Stack) -> None:
    if stack.server.poll() is None:
        os.killpg(stack.server.pid, signal.SIGTERM)
        try:
            stack.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(stack.server.pid, signal.SIGKILL)
            stack.server.wait()
    drop_schema(stack.schema)
    delete_redis_keys(stack.namespace, stack.user_prefix)


def user_tokens(prefix: str) -> list[str]:
    """Tokens of USERS users whose ids share the run's prefix, so their Redis keys can be found afterwards."""
    from app.auth import mint_token

    return [mint_token(JWT_SECRET, prefix + str(uuid.uuid4())[8:]) for _ in range(USERS)]


# --- load ---------------------------------------------------------------------------------------------------


@dataclass
class Round:
    endpoint: str  # "static" or "tickets"
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    socket_errors: int
    server_cpu_ms_per_request: float
    backing_cpu_ms_per_request: float  # PostgreSQL + Redis
    wrk_cpu_cores: float
    other_cpu_cores: float


def run_wrk(
    stack: Stack, endpoint: str, scripts: dict[str, Path], seconds: int, profile: list[str] | None = None
) -> Round:
    target = f"{stack.url}/healthz" if endpoint == "static" else f"{stack.url}/v1/uploads"
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(scripts[endpoint]),
        target,
    ]
    pids, backing = stack.server_pids(), backing_pids()
    backing_cpu = process_cpu_seconds(backing)
    busy, server_cpu, started = busy_cpu_seconds(), process_cpu_seconds(pids), time.monotonic()
    spy = subprocess.Popen(profile, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) if profile else None
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = wrk.communicate(timeout=seconds + 30)  # wrk stops itself after `seconds`
    elapsed = time.monotonic() - started
    server_cpu = process_cpu_seconds(pids) - server_cpu
    backing_cpu = process_cpu_seconds(backing) - backing_cpu  # connections opened meanwhile are not seen
    wrk_usage = resource_usage_of_last_child()
    other = busy_cpu_seconds() - busy - server_cpu - backing_cpu - wrk_usage
    if spy is not None:
        spy.wait(timeout=seconds + 60)
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed ({wrk.returncode}): {err.decode(errors='replace')}")
    line = next(line for line in out.decode().splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    requests = max(1, result["requests"])
    return Round(
        endpoint=endpoint,
        rps=result["requests"] / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        requests=result["requests"],
        non2xx=result["non2xx"],
        socket_errors=result["socket_errors"],
        server_cpu_ms_per_request=server_cpu * 1000 / requests,
        backing_cpu_ms_per_request=backing_cpu * 1000 / requests,
        wrk_cpu_cores=wrk_usage / elapsed,
        other_cpu_cores=max(0.0, other / elapsed),
    )


_children_cpu = 0.0


def resource_usage_of_last_child() -> float:
    """CPU seconds of the children reaped since the last call (here: the wrk that just ended)."""
    import resource

    global _children_cpu
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    spent, _children_cpu = total - _children_cpu, total
    return spent


# --- report -------------------------------------------------------------------------------------------------


@dataclass
class Summary:
    endpoint: str
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_request: float
    backing_cpu_ms_per_request: float
    rounds: int


def summarise(rounds: list[Round], endpoint: str) -> Summary:
    mine = [r for r in rounds if r.endpoint == endpoint]
    return Summary(
        endpoint=endpoint,
        rps=statistics.median(r.rps for r in mine),
        p50_ms=statistics.median(r.p50_ms for r in mine),
        p99_ms=statistics.median(r.p99_ms for r in mine),
        server_cpu_ms_per_request=statistics.median(r.server_cpu_ms_per_request for r in mine),
        backing_cpu_ms_per_request=statistics.median(r.backing_cpu_ms_per_request for r in mine),
        rounds=len(mine),
    )


def checks(static: Summary, tickets: Summary) -> list[tuple[str, bool]]:
    rps_ratio, p50_ratio = tickets.rps / static.rps, tickets.p50_ms / static.p50_ms
    return [
        (
            f"tickets/static req/s {rps_ratio:.2f} >= {MIN_TICKETS_TO_STATIC}",
            rps_ratio >= MIN_TICKETS_TO_STATIC,
        ),
        (f"tickets/static p50 {p50_ratio:.2f} <= {MAX_P50_TO_STATIC}", p50_ratio <= MAX_P50_TO_STATIC),
    ]


def print_report(
    rounds: list[Round],
    static: Summary,
    tickets: Summary,
    results: list[tuple[str, bool]],
    server: str,
    workers: int,
) -> None:
    print(
        f"broker serve --server {server} --workers {workers} on 127.0.0.1; wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}; "
        f"{os.cpu_count()} cores shared by server, PostgreSQL, Redis and wrk"
    )
    header = (
        f"{'round':<5} {'endpoint':<8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'requests':>8} "
        f"{'server ms/req':>13} {'pg+redis ms/req':>15} {'wrk cores':>9} {'other cores':>11}"
    )
    print(header)
    print("-" * len(header))
    for i, r in enumerate(rounds):
        print(
            f"{i // 2 + 1:<5} {r.endpoint:<8} {r.rps:>7.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.requests:>8} "
            f"{r.server_cpu_ms_per_request:>13.2f} {r.backing_cpu_ms_per_request:>15.2f} "
            f"{r.wrk_cpu_cores:>9.2f} {r.other_cpu_cores:>11.2f}"
        )
    print()
    print(
        f"{'median':<14} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'server ms/req':>13} {'pg+redis ms/req':>15}"
    )
    for s in (static, tickets):
        print(
            f"{s.endpoint:<14} {s.rps:>7.0f} {s.p50_ms:>7.2f} {s.p99_ms:>7.2f} "
            f"{s.server_cpu_ms_per_request:>13.2f} {s.backing_cpu_ms_per_request:>15.2f}"
        )
    print(
        f"{'tickets/static':<14} {tickets.rps / static.rps:>7.2f} {tickets.p50_ms / static.p50_ms:>7.2f} "
        f"{tickets.p99_ms / static.p99_ms:>7.2f} "
        f"{tickets.server_cpu_ms_per_request / static.server_cpu_ms_per_request:>13.2f}"
    )
    other = max(r.other_cpu_cores for r in rounds)
    if other > BUSY_MACHINE_CORES:
        print(
            f"  warning: other processes kept up to {other:.2f} cores busy during a round - rerun when idle"
        )
    for label, ok in results:
        print(f"  [{'ok' if ok else 'MISSED'}] {label}")


def print_profile(collapsed: Path, top: int = 25) -> None:
    """Inclusive share of samples per frame (function + file), from py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = {
            frame.split(" (", 1)[0] + " (" + frame.split(" (", 1)[-1].split(":")[0] + ")"
            for frame in stack.split(";")
        }
        for frame in frames:
            inclusive[frame] += n
    print(f"\nprofile: {total} samples of one worker, inclusive share per frame (top {top})")
    for frame, n in inclusive.most_common(top):
        print(f"  {100 * n / max(1, total):5.1f}%  {frame}")


# --- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help=f"measured rounds per endpoint (1-{MAX_ROUNDS})"
    )
    parser.add_argument("--duration", type=int, default=10, help=f"seconds per round (1-{MAX_DURATION})")
    parser.add_argument("--server", choices=["gunicorn", "waitress"], default="gunicorn")
    parser.add_argument("--threads", type=int, help="gunicorn threads per worker [default: broker serve's]")
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="server processes (1-8) [default: %(default)s]"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument(
        "--profile", metavar="PY_SPY", help="py-spy executable: profile one extra tickets round"
    )
    parser.add_argument(
        "--no-check", action="store_true", help="report only; exit 0 even if a target is missed"
    )
    args = parser.parse_args(argv)
    rounds_n = max(1, min(MAX_ROUNDS, args.rounds))
    seconds = max(1, min(MAX_DURATION, args.duration))
    workers = max(1, min(8, args.workers))

    with tempfile.TemporaryDirectory(prefix="bench-tickets-") as tmp:
        workdir = Path(tmp)
        try:
            stack = start_stack(args.server, workdir, args.threads, workers)
        except Exception as error:
            print(f"bench: the server did not start: {error}", file=sys.stderr)
            return 2
        try:
            scripts = {"static": workdir / "static.lua", "tickets": workdir / "tickets.lua"}
            scripts["static"].write_text(DONE_LUA)
            scripts["tickets"].write_text(post_script(user_tokens(stack.user_prefix)))
            for endpoint in ("static", "tickets"):
                run_wrk(stack, endpoint, scripts, WARMUP_SECONDS)
            rounds: list[Round] = []
            for _ in range(rounds_n):
                for endpoint in ("static", "tickets"):
                    rounds.append(run_wrk(stack, endpoint, scripts, seconds))
            if args.profile:
                OUT_DIR.mkdir(parents=True, exist_ok=True)
                collapsed = OUT_DIR / "tickets-profile.txt"
                spy = [args.profile, "record", "-p", str(stack.worker_pids()[0]), "-d", str(seconds)]
                spy += ["-r", "200", "-f", "raw", "-o", str(collapsed), "--nonblocking"]
                run_wrk(stack, "tickets", scripts, seconds, profile=spy)
        except Exception as error:
            print(f"bench: {error}", file=sys.stderr)
            return 2
        finally:
            log_copy = OUT_DIR / "tickets-server.log"
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            stop_stack(stack)
            log_copy.write_bytes(stack.log_path.read_bytes()[-200_000:])

    static, tickets = summarise(rounds, "static"), summarise(rounds, "tickets")
    results = checks(static, tickets)
    invalid = [r for r in rounds if r.non2xx or r.socket_errors]
    if args.json:
        report: dict[str, Any] = {
            "server": args.server,
            "workers": workers,
            "rounds": [asdict(r) for r in rounds],
            "static": asdict(static),
            "tickets": asdict(tickets),
            "ratios": {
                "rps": tickets.rps / static.rps,
                "p50": tickets.p50_ms / static.p50_ms,
                "p99": tickets.p99_ms / static.p99_ms,
            },
            "checks": [{"target": label, "met": ok} for label, ok in results],
        }
        print(json.dumps(report, indent=2))
    else:
        print_report(rounds, static, tickets, results, args.server, workers)
    if args.profile and (OUT_DIR / "tickets-profile.txt").exists():
        print_profile(OUT_DIR / "tickets-profile.txt")
    if invalid:
        print(
            f"bench: {len(invalid)} round(s) had non-2xx answers or socket errors; see {log_copy}",
            file=sys.stderr,
        )
        return 2
    missed = [label for label, ok in results if not ok]
    if missed and not args.no_check:
        print(f"benchmark targets missed: {'; '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
