"""A mixed load against a running server, for tests/test_gunicorn.py (short) and
bench/mixed_load.py (long): clients that submit batches (some large), read them, list
their jobs, cancel and delete them, each with its own token, over loopback. Bounded in
clients, time and requests. Returns what the server answered, per route."""

import http.client
import json
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadResult:
    codes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    created: dict[str, int] = field(default_factory=dict)  # batch id -> jobs submitted
    deleted: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def server_errors(self) -> dict[str, int]:
        return {route: sum(code >= 500 for code in codes) for route, codes in self.codes.items() if any(code >= 500 for code in codes)}

    def percentile(self, route: str, fraction: float) -> float:
        values = sorted(self.seconds[route])
        return values[min(len(values) - 1, int(len(values) * fraction))] if values else float("nan")


def run_load(
    *, port: int, tokens: list[str], body: dict[str, Any], seconds: float, large_jobs: int = 20_000, max_requests: int = 100_000
) -> LoadResult:
    """`len(tokens)` clients for `seconds`; `body` is a valid submission (its jobs are
    replaced). One submission in twenty is large (`large_jobs` jobs)."""
    result = LoadResult()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    budget = [max_requests]

    def call(route: str, method: str, path: str, token: str, payload: dict | None = None) -> tuple[int, Any]:
        with lock:
            if budget[0] <= 0:
                raise TimeoutError("request budget spent")
            budget[0] -= 1
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            code = response.status
        except OSError as exc:
            with lock:
                result.errors.append(f"{route}: {exc!r}")
            return 0, None
        finally:
            connection.close()
        with lock:
            result.codes[route].append(code)
            result.seconds[route].append(time.monotonic() - started)
        try:
            return code, json.loads(raw) if raw else None
        except ValueError:
            with lock:
                result.errors.append(f"{route}: {code} answered something that is not JSON: {raw[:100]!r}")
            return code, None

    def client(token: str, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 (load shapes, not secrets)
        mine: list[str] = []
        try:
            while time.monotonic() < deadline:
                roll = rng.random()
                if roll < 0.25 or not mine:
                    n = large_jobs if rng.random() < 0.05 else rng.randint(1, 50)
                    submission = {**body, "jobs": [{"args": {"message": f"m{i}"}} for i in range(n)]}
                    code, answer = call("POST /batches", "POST", "/batches", token, submission)
                    if code == 201:
                        mine.append(answer["batch_id"])
                        with lock:
                            result.created[answer["batch_id"]] = n
                elif roll < 0.55:
                    call("GET /batches/<id>", "GET", f"/batches/{rng.choice(mine)}", token)
                elif roll < 0.75:
                    call("GET /batches/<id>/jobs", "GET", f"/batches/{rng.choice(mine)}/jobs?limit=100", token)
                elif roll < 0.85:
                    call("GET /batches", "GET", "/batches?limit=100", token)
                elif roll < 0.93:
                    call("POST /batches/<id>/cancel", "POST", f"/batches/{rng.choice(mine)}/cancel", token)
                else:
                    victim = mine.pop(rng.randrange(len(mine)))
                    code, _ = call("DELETE /batches/<id>", "DELETE", f"/batches/{victim}", token)
                    if code == 204:
                        with lock:
                            result.deleted.add(victim)
        except TimeoutError:
            return

    threads = [threading.Thread(target=client, args=(token, i)) for i, token in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 180)
    return result
