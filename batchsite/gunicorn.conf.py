"""gunicorn's settings for this service (`gunicorn -c batchsite/gunicorn.conf.py
batchsite.wsgi`; `make run` uses it). Environment: HOST, PORT, WEB_WORKERS,
WEB_THREADS, WEB_TIMEOUT.

Every request does bounded work (large deletes and cancels go on in the workers'
sweeps), so a request taking longer than `timeout` is stuck, and its worker is replaced.
Errors gunicorn answers itself, before Django sees the request (a request line or
headers over the limits, a malformed request), are RFC 9457 problems like every other
error of the API, not HTML pages: gunicorn has no setting for their format, so its one
function that writes them is replaced here.
"""

import json
import os
import shutil
import tempfile
import uuid

from gunicorn import util

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_WORKERS", "2"))
# 75: a long poll of the event feed (GET /events?wait=60) holds its worker up to 60 s,
# and a sync worker is killed once a request runs past the timeout.
timeout = int(os.environ.get("WEB_TIMEOUT", "75"))
# WEB_THREADS > 1: each process serves that many requests at once (gunicorn's gthread
# workers), so a client waiting on the feed holds a thread, not a whole process.
threads = int(os.environ.get("WEB_THREADS", "1"))
graceful_timeout = 30
keepalive = 5
# Request line, header count and header size limits (gunicorn's defaults, written out).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# No access log of gunicorn's own: the service logs each request once, with its id, user
# and duration (batchsite/requests_log.py); both together wrote every request twice.
accesslog = None
# No control socket (gunicornc). gunicorn's default is one fixed path per home
# ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl): a second server took it
# over and removed it when it stopped, and a user without a writable home got a
# permission warning at every start. Stop and reload with signals (systemd's do).
control_socket_disable = True

# LOG_FORMAT=json (batchsite/settings.py): gunicorn's own lines, its access lines too,
# as JSON objects like the service's, so a log collector reads one format.
if os.environ.get("LOG_FORMAT") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "gunicorn.error": {"handlers": ["json"], "level": os.environ.get("LOG_LEVEL", "INFO"), "propagate": False},
            "gunicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["json"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    }


def _write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    body = json.dumps(
        {"type": f"urn:batches:problem:http-{status_int}", "title": reason, "status": status_int, "detail": mesg or reason}
    ).encode()
    # A request id like every other answer's (the request's own headers were not read).
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n"
        f"X-Request-ID: {uuid.uuid4().hex}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode("latin1")
    util.write_nonblock(sock, head + body)


util.write_error = _write_problem

# GET /metrics counts submissions in every web process: prometheus_client's multiprocess
# mode shares them through files in this folder (set before the workers start, emptied
# at each start; see batchsite/metrics.py).
_made_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _made_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="batches-metrics-")
else:
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def child_exit(server, worker) -> None:  # noqa: ANN001 (gunicorn's hook)
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # noqa: ANN001 (gunicorn's hook)
    if _made_metrics_dir:  # a folder of our own making goes with the server
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_worker_init(worker) -> None:  # noqa: ANN001 (gunicorn's hook)
    """A web server started with BATCHES_REQUIRE_ISOLATION=1 makes sealing required for
    every worker of the deployment (`jobs.policy`): a job worker started without it then
    gets no jobs. If the database does not answer yet, the next process with the setting
    (a job worker, another web worker) records it."""
    from django.conf import settings
    from django.db import DatabaseError

    if settings.BATCHES_REQUIRE_ISOLATION:
        from jobs.policy import set_isolation_required

        try:
            set_isolation_required(required=True, by=f"web server pid {os.getpid()} (BATCHES_REQUIRE_ISOLATION=1)")
        except DatabaseError as exc:
            worker.log.warning("could not record that sealed jobs are required: %s", exc)
