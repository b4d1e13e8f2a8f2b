"""Settings for the test suite: the real settings with a throwaway key and cheap
password hashing. DATABASE_URL still chooses SQLite or PostgreSQL."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-deployment")
os.environ.setdefault("BATCHES_LOG_DIR", tempfile.mkdtemp(prefix="batches-test-logs-"))
os.environ.setdefault("BATCHES_WORK_DIR", tempfile.mkdtemp(prefix="batches-test-work-"))

from batchsite.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": "100000/min", "auth_failures": "100000/min"}}  # noqa: F405

# A test database of this process's own, so two test runs (or a run and a benchmark)
# on one machine never drop each other's database.
_default_db = DATABASES["default"]  # noqa: F405
if _default_db["ENGINE"] == "django.db.backends.sqlite3":
    _default_db["TEST"] = {"NAME": os.path.join(tempfile.mkdtemp(prefix="batches-test-db-"), "test.sqlite3")}
else:
    _default_db["TEST"] = {"NAME": f"test_{_default_db['NAME']}_{os.getpid()}"}

# In-process tests count throttles in this process's memory (the schema is loaded at
# collection, before any test database exists); servers and workers that the tests start
# as processes use the real settings' shared database cache (tests/test_gunicorn.py).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
