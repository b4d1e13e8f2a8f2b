"""Settings for the batches service. Everything deployment-specific comes from the
environment; the README lists every variable."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from batchsite.env import envbool, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("BATCHES_DATA_DIR", str(BASE_DIR / "data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = envbool("DEBUG", False)
SECRET_KEY = envstr("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required unless DEBUG is true")
    SECRET_KEY = "insecure-development-key-do-not-deploy"  # noqa: S105 (DEBUG only)

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts.lockouts.LoginLockoutsConfig",  # django-axes, named for the admin's home page
    "accounts",
    "batches",
    "jobs",
    "ga4gh",
]

MIDDLEWARE = [
    # First: every answer, problems included, carries the request's id.
    "batchsite.requests_log.RequestIdMiddleware",
    "batchsite.middleware.ProblemMiddleware",
    "batchsite.middleware.TrailingSlashMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as its documentation asks: locks out admin logins that keep failing.
    "axes.middleware.AxesMiddleware",
]

# Behind a TLS-terminating reverse proxy (the deployment guide, docs/deploy.md), set
# BATCHES_HTTPS=1: cookies are sent over HTTPS only, plain HTTP is redirected (but for
# the probes and metrics, which load balancers and scrapers reach directly), the proxy's
# X-Forwarded-Proto says which was used, and browsers are told to keep to HTTPS (HSTS).
BATCHES_HTTPS = envbool("BATCHES_HTTPS", False)
if BATCHES_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("BATCHES_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("BATCHES_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = envbool("BATCHES_HSTS_PRELOAD", False)

# Reverse proxies in front of the web server that append to X-Forwarded-For (0: none;
# clients' own X-Forwarded-For is then ignored). Throttles and the admin lockout count
# per client address.
BATCHES_TRUSTED_PROXIES = envint("BATCHES_TRUSTED_PROXIES", 0)
AXES_IPWARE_PROXY_COUNT = BATCHES_TRUSTED_PROXIES or None
AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR") if BATCHES_TRUSTED_PROXIES else ("REMOTE_ADDR",)

# The admin login: django-axes counts failures per user name and client address in the
# database and locks that pair out (BATCHES_LOGIN_FAILURES in a row, for an hour).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = envint("BATCHES_LOGIN_FAILURES", 5, minimum=1)
AXES_COOLOFF_TIME = 1  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # commands print only what they are asked for (issue_token: the token)

# Throttle counts live in a cache every web process shares: the database's (the table
# `migrate` makes: accounts/migrations/0005_cache_table.py), or Redis with
# BATCHES_CACHE_URL=redis://host:6379/0. A per-process cache let 4 processes take 4
# times the rate.
_CACHE_URL = envstr("BATCHES_CACHE_URL", "")
if _CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _CACHE_URL}}
elif _CACHE_URL:
    raise ImproperlyConfigured(f"BATCHES_CACHE_URL must be a redis:// URL (or empty for the database cache), not {_CACHE_URL!r}")
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "batches_cache"}}

ROOT_URLCONF = "batchsite.urls"
CSRF_FAILURE_VIEW = "batchsite.errors.forbidden"
WSGI_APPLICATION = "batchsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The seed's routes have no trailing slash; we serve both forms ourselves, so
# CommonMiddleware must not redirect (a redirect would turn a DELETE into a GET).
APPEND_SLASH = False

_default_sqlite = f"sqlite:///{DATA_DIR / 'batches.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(envstr("DATABASE_URL", _default_sqlite), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; IMMEDIATE takes the write
    # lock at BEGIN so two writers queue on the busy timeout instead of failing with
    # "database is locked" when a read transaction tries to upgrade.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-batches.sqlite3")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
FORMAT_MODULE_PATH = ["batchsite.formats"]  # times to the second in the admin
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve the admin's and Swagger UI's assets from the installed apps without
# collectstatic, so `make run` needs no extra step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# A submission of 100,000 jobs with short arguments is a few MiB; anything past this is
# refused with 413 before it is parsed.
BATCHES_MAX_REQUEST_BYTES = envint("BATCHES_MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = BATCHES_MAX_REQUEST_BYTES

# Limits on what one batch may ask for.
BATCHES_MAX_JOBS_PER_BATCH = envint("BATCHES_MAX_JOBS_PER_BATCH", 100_000, minimum=1)
BATCHES_MAX_CPU = envint("BATCHES_MAX_CPU", os.cpu_count() or 1, minimum=1)
_total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
BATCHES_MAX_MEMORY_MIB = envint("BATCHES_MAX_MEMORY_MIB", _total_mib, minimum=1)
BATCHES_MAX_ATTEMPTS = 10
# Times a job is requeued after attempts that infrastructure ended (a lost worker, a
# node failure, a preemption...), which use up none of its attempts: past this it ends
# FAILED, so a broken node or a bug cannot make it loop forever.
BATCHES_MAX_REQUEUES = envint("BATCHES_MAX_REQUEUES", 5)
# The event feed (GET /events, jobs.feed): `cleanup` removes events older than the
# retention (a cursor from before it gets 410); `wait=` long polls check every
# BATCHES_EVENTS_POLL_MS with no database connection held in between, for at most
# BATCHES_EVENTS_MAX_WAIT seconds: 60, but never within 10 s of gunicorn's request
# timeout (WEB_TIMEOUT, default 75), which would kill the waiting worker.
BATCHES_EVENTS_RETENTION_DAYS = envint("BATCHES_EVENTS_RETENTION_DAYS", 30, minimum=1)
BATCHES_EVENTS_POLL_MS = envint("BATCHES_EVENTS_POLL_MS", 500, minimum=10)
BATCHES_EVENTS_MAX_WAIT = min(envint("BATCHES_EVENTS_MAX_WAIT", 60), 60, max(envint("WEB_TIMEOUT", 75) - 10, 0))
# Webhooks (jobs.webhooks): receivers on private, loopback or link-local addresses are
# refused unless allowed (SSRF); a delivery is retried with backoff for this long.
BATCHES_WEBHOOK_ALLOW_PRIVATE = envbool("BATCHES_WEBHOOK_ALLOW_PRIVATE", False)
BATCHES_WEBHOOK_RETRY_HOURS = envint("BATCHES_WEBHOOK_RETRY_HOURS", 25, minimum=1)
BATCHES_WEBHOOK_TIMEOUT_SECONDS = envint("BATCHES_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
# GA4GH TES tasks (tes/): memory when a task asks for none, and the hosts http(s)
# inputs may be fetched from (none by default: only file:// inside the caller's
# filesystems, and content given in the task).
BATCHES_TES_DEFAULT_MEMORY_MIB = envint("BATCHES_TES_DEFAULT_MEMORY_MIB", 1024, minimum=1)
BATCHES_TES_INPUT_HOSTS = envlist("BATCHES_TES_INPUT_HOSTS", [])
BATCHES_TES_ORGANIZATION = envstr("BATCHES_TES_ORGANIZATION", "batches")
BATCHES_TES_ORGANIZATION_URL = envstr("BATCHES_TES_ORGANIZATION_URL", "https://example.org/batches")
BATCHES_DEFAULT_TIMEOUT_SECONDS = envint("BATCHES_DEFAULT_TIMEOUT_SECONDS", 3600, minimum=1)
BATCHES_MAX_TIMEOUT_SECONDS = envint("BATCHES_MAX_TIMEOUT_SECONDS", 7 * 24 * 3600, minimum=1)

BATCHES_EXECUTOR = envstr("BATCHES_EXECUTOR", "local")
if BATCHES_EXECUTOR not in {"local", "slurm"} and "." not in BATCHES_EXECUTOR:
    raise ImproperlyConfigured(f"BATCHES_EXECUTOR must be local, slurm or the dotted path of an Executor class, not {BATCHES_EXECUTOR!r}")
BATCHES_LOG_DIR = Path(envstr("BATCHES_LOG_DIR", str(DATA_DIR / "logs"))).resolve()
BATCHES_WORK_DIR = Path(envstr("BATCHES_WORK_DIR", str(DATA_DIR / "work"))).resolve()
# Workers (`manage.py runworker`). A worker renews its lease every third of it; once
# the lease has run out its jobs are retried or FAILED "worker lost". Capacity 0 means
# the machine's (cores in the affinity mask, physical memory).
BATCHES_WORKER_LEASE_SECONDS = envint("BATCHES_WORKER_LEASE_SECONDS", 30, minimum=1)
BATCHES_WORKER_POLL_MS = envint("BATCHES_WORKER_POLL_MS", 500, minimum=10)
BATCHES_WORKER_CPUS = envint("BATCHES_WORKER_CPUS", 0)
BATCHES_WORKER_MEMORY_MIB = envint("BATCHES_WORKER_MEMORY_MIB", 0)
# Fair share: at most this many of one user's jobs are RUNNABLE, STARTING or RUNNING
# at once; the rest wait PENDING with a reason saying so (0: no quota).
BATCHES_USER_MAX_ACTIVE_JOBS = envint("BATCHES_USER_MAX_ACTIVE_JOBS", 0)
# Fair share (jobs/fairshare.py): a user's past usage counts half as much every this many
# seconds. An hour: a burst an hour ago still yields to a newcomer, yesterday's holds
# nobody back (Slurm's 7 days suits allocations of a cluster over weeks, not one queue).
BATCHES_FAIRSHARE_HALF_LIFE = envint("BATCHES_FAIRSHARE_HALF_LIFE", 3600)
if BATCHES_FAIRSHARE_HALF_LIFE < 1:
    raise ImproperlyConfigured("BATCHES_FAIRSHARE_HALF_LIFE must be at least 1 (seconds)")
# Stopping a job: SIGTERM to its process group, this long to exit, then SIGKILL.
BATCHES_KILL_GRACE_SECONDS = envint("BATCHES_KILL_GRACE_SECONDS", 10)
# The slurm executor (BATCHES_EXECUTOR=slurm). BATCHES_SLURM_DIR holds each submission's
# task files and exit statuses, and BATCHES_LOG_DIR the logs: both must be on a
# filesystem that the worker, the web server and every compute node share.
BATCHES_SLURM_DIR = Path(envstr("BATCHES_SLURM_DIR", str(DATA_DIR / "slurm"))).resolve()
BATCHES_SLURM_PARTITION = envstr("BATCHES_SLURM_PARTITION", "")
BATCHES_SLURM_ACCOUNT = envstr("BATCHES_SLURM_ACCOUNT", "")
# Where sbatch, squeue, scancel and sinfo are (empty: on PATH).
BATCHES_SLURM_BIN = envstr("BATCHES_SLURM_BIN", "")
# The Python 3 that runs each task's small job script on the nodes (standard library only).
BATCHES_SLURM_PYTHON = envstr("BATCHES_SLURM_PYTHON", "/usr/bin/python3")
# Attempts in Slurm's hands at once (queued or running), counted in cpus; 0: twice the
# partition's cpus, read from sinfo when the worker starts. The order in which jobs start
# is the service's (fair share, priority): what waits in Slurm's own queue is beyond it,
# so only about one cluster's worth waits there, enough to start work the moment a task
# ends and little enough that a newcomer's job waits behind at most one round of others'.
BATCHES_SLURM_MAX_SUBMITTED = envint("BATCHES_SLURM_MAX_SUBMITTED", 0, minimum=0)
# At most this many tasks of one array run at once (sbatch --array=...%N; 0: no limit).
BATCHES_SLURM_ARRAY_THROTTLE = envint("BATCHES_SLURM_ARRAY_THROTTLE", 0)
# How often the controller is asked (squeue); exit-status files are read more often.
BATCHES_SLURM_POLL_MS = envint("BATCHES_SLURM_POLL_MS", 1000, minimum=50)
# Longest wait for one Slurm command before the controller counts as unreachable.
BATCHES_SLURM_COMMAND_TIMEOUT = envint("BATCHES_SLURM_COMMAND_TIMEOUT", 10, minimum=1)
# Working directories on the nodes (empty: the node's $TMPDIR or /tmp).
BATCHES_SLURM_NODE_WORK_DIR = envstr("BATCHES_SLURM_NODE_WORK_DIR", "")
# bubblewrap on the nodes: each task runs its program sealed in it, as local jobs are.
BATCHES_SLURM_BWRAP = envstr("BATCHES_SLURM_BWRAP", "/usr/bin/bwrap")
# Sealing jobs (README, "Sealed jobs"; local and Slurm): each tenant's jobs run as a unix
# account of their own (`manage.py job_accounts`: a pool, or users mapped to accounts);
# a deployment with no job account at all runs every tenant's as this one unprivileged
# user instead (the worker runs as root to switch to it; a root worker with neither
# refuses to start unless BATCHES_ISOLATION is off). Jobs run in a bubblewrap sandbox,
# held to their memory, processes and cores by cgroups; their log is cut at a size. The
# worker uses what the machine offers and says what is missing;
# BATCHES_REQUIRE_ISOLATION=1 requires every part for the whole deployment (a worker
# without one refuses to start, or, already running, claims no jobs).
BATCHES_JOB_USER = envstr("BATCHES_JOB_USER", "")
# Names of the pool accounts `job_accounts --pool N` creates: <prefix>0001...
BATCHES_JOB_ACCOUNT_PREFIX = envstr("BATCHES_JOB_ACCOUNT_PREFIX", "batches-t")
# `auto`: use every part the machine offers; `off`: seal nothing (development only).
BATCHES_ISOLATION = envstr("BATCHES_ISOLATION", "auto")
if BATCHES_ISOLATION not in {"auto", "off"}:
    raise ImproperlyConfigured(f"BATCHES_ISOLATION must be auto or off, not {BATCHES_ISOLATION!r}")
BATCHES_REQUIRE_ISOLATION = envbool("BATCHES_REQUIRE_ISOLATION", False)
# Sandboxed jobs: `none` (their own loopback only: the database, Redis and the rest of
# the network are out of reach) or `host` (the machine's network, for jobs that download).
BATCHES_JOB_NETWORK = envstr("BATCHES_JOB_NETWORK", "none")
if BATCHES_JOB_NETWORK not in {"none", "host"}:
    raise ImproperlyConfigured(f"BATCHES_JOB_NETWORK must be none or host, not {BATCHES_JOB_NETWORK!r}")
BATCHES_JOB_MAX_PROCESSES = envint("BATCHES_JOB_MAX_PROCESSES", 512, minimum=1)
BATCHES_LOG_MAX_BYTES = envint("BATCHES_LOG_MAX_BYTES", 100 * 1024 * 1024, minimum=1)

# How long a token lives when issue_token is not told (0: no expiry).
# GET /metrics: scrapers send `Authorization: Bearer <token>`; without the token only
# peers in BATCHES_METRICS_ALLOW's networks (comma-separated CIDRs, `127.0.0.1/32,::1/128`;
# empty: none) are answered. Behind a proxy on this machine, loopback is everyone.
BATCHES_METRICS_TOKEN = envstr("BATCHES_METRICS_TOKEN", "")
BATCHES_METRICS_ALLOW = envstr("BATCHES_METRICS_ALLOW", "")
BATCHES_TOKEN_DEFAULT_DAYS = envint("BATCHES_TOKEN_DEFAULT_DAYS", 0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["core.renderers.FastJSONRenderer"],
    "DEFAULT_METADATA_CLASS": "batchsite.metadata.SchemaPointerMetadata",
    "DEFAULT_PARSER_CLASSES": ["batchsite.parsers.BoundedJSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.problems.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": envstr("BATCHES_THROTTLE_RATE", "6000/min"),
        # Failed token authentications per client address: past it, 429 before the
        # token is even looked at.
        "auth_failures": envstr("BATCHES_AUTH_FAILURE_RATE", "60/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # The client's address, for the throttles: the connection's own, or with trusted
    # proxies in front, the address the nearest of them saw. (DRF's default trusts any
    # X-Forwarded-For a client sends, so a forged one escaped the failure throttle.)
    "NUM_PROXIES": BATCHES_TRUSTED_PROXIES,
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%SZ",
    "UNICODE_JSON": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Batches API",
    "DESCRIPTION": (
        "Submit batches of compute jobs (one tool, one hardware configuration, many "
        "argument sets), follow their status and read their logs. Lists are bare JSON "
        'arrays paginated with `?limit=` and a `Link: <...>; rel="next"` header. Every answer '
        "carries an `X-Request-ID` header (the client's own, if it sent a sane one) that the "
        "server's logs carry too."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"JobStatus": "jobs.statuses.Status"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "batchsite.schema.add_problem_responses",
    ],
}

# LOG_FORMAT=json: one JSON object per record (for a log collector); `text` for people.
# Either way every record written while a request is served carries its request id.
LOG_FORMAT = envstr("LOG_FORMAT", "text")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
# Which requests batchsite.requests logs: `all` (deployments), or `changes`: writes and
# answers of 400 and above only (make run's console, which a polling client buried).
LOG_REQUESTS = envstr("LOG_REQUESTS", "all")
if LOG_REQUESTS not in ("all", "changes"):
    raise ImproperlyConfigured(f"LOG_REQUESTS must be all or changes, not {LOG_REQUESTS!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "batchsite.requests_log.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request_id"], "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
