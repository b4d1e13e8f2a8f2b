"""GET /metrics: scraped and parsed with the Prometheus text parser; the figures match
the database; only a holder of BATCHES_METRICS_TOKEN or a peer in the networks of
BATCHES_METRICS_ALLOW may scrape (loopback is not enough: behind a reverse proxy on the
same machine, every request comes from loopback)."""

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from batches.models import Batch
from jobs.executors.base import Capacity
from jobs.leases import register_worker
from jobs.models import Job
from tests.conftest import submission


def scrape(client, **headers) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics", REMOTE_ADDR=headers.pop("REMOTE_ADDR", "127.0.0.1"), **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_match_the_database(alice_client, anon_client, catalog, settings):
    settings.BATCHES_METRICS_ALLOW = "127.0.0.1/32"
    before = scrape(anon_client)
    submitted_before = before.get("batches_submissions_total", {}).get((), 0)
    jobs_before = before.get("batches_submitted_jobs_total", {}).get((), 0)
    batch_id = alice_client.post(
        "/batches", submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(5)]), format="json"
    ).json()["batch_id"]
    jobs = list(Job.objects.filter(batch_id=batch_id).order_by("index"))
    now = timezone.now()
    Job.objects.filter(pk=jobs[0].pk).update(status="SUCCEEDED", start_time=now - timedelta(seconds=30), stop_time=now)
    Job.objects.filter(pk=jobs[1].pk).update(status="RUNNING", start_time=now)
    Batch.objects.filter(pk=batch_id).update(create_time=now - timedelta(minutes=10))
    register_worker(executor="local", capacity=Capacity(2, 1024), lease_seconds=30, keeps_attempts=False, isolation={})

    samples = scrape(anon_client)
    by_state = {dict(labels)["state"]: value for labels, value in samples["batches_jobs"].items()}
    assert by_state == {"SUBMITTED": 3, "PENDING": 0, "RUNNABLE": 0, "STARTING": 0, "RUNNING": 1, "SUCCEEDED": 1, "FAILED": 0}
    assert samples["batches_queue_depth"][()] == 3
    assert 600 <= samples["batches_oldest_waiting_seconds"][()] < 700
    assert samples["batches_job_duration_seconds_count"][()] == 1
    assert 29 <= samples["batches_job_duration_seconds_sum"][()] <= 31
    assert samples["batches_submissions_total"][()] == submitted_before + 1
    assert samples["batches_submitted_jobs_total"][()] == jobs_before + 5
    assert dict(samples["batches_workers"])[(("state", "ACTIVE"),)] == 1
    [(labels, age)] = samples["batches_worker_heartbeat_age_seconds"].items()
    assert dict(labels)["executor"] == "local" and 0 <= age < 5


def test_metrics_are_not_for_everyone(db, anon_client, settings):
    assert anon_client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    settings.BATCHES_METRICS_TOKEN = "scrape-secret"
    assert anon_client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert anon_client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert scrape(anon_client, REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-secret")["batches_queue_depth"][()] == 0


def refused(response) -> bool:
    return response.status_code == 403 and response["Content-Type"] == "application/problem+json"


def test_loopback_is_refused_without_the_token_or_an_allowed_network(db, anon_client, settings):
    """Without a token, loopback alone was allowed: behind nginx on the same machine
    that let every client of the proxy scrape."""
    assert settings.BATCHES_METRICS_TOKEN == "" and settings.BATCHES_METRICS_ALLOW == ""
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "203.0.113.9"):
        response = anon_client.get("/metrics", REMOTE_ADDR=address)
        assert refused(response), (address, response.status_code)
        assert "BATCHES_METRICS_ALLOW" in response.json()["detail"]
    settings.BATCHES_METRICS_TOKEN = "scrape-secret"
    assert refused(anon_client.get("/metrics", REMOTE_ADDR="127.0.0.1"))
    assert scrape(anon_client, REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer scrape-secret")["batches_queue_depth"][()] == 0


def test_an_allowed_network_scrapes_without_the_token(db, anon_client, settings):
    settings.BATCHES_METRICS_ALLOW = "127.0.0.1/32"
    assert scrape(anon_client, REMOTE_ADDR="127.0.0.1")["batches_queue_depth"][()] == 0
    assert scrape(anon_client, REMOTE_ADDR="::ffff:127.0.0.1")["batches_queue_depth"][()] == 0  # a dual-stack socket's form
    for address in ("::1", "127.0.0.2", "203.0.113.9", ""):  # only what is listed
        assert refused(anon_client.get("/metrics", REMOTE_ADDR=address)), address
    settings.BATCHES_METRICS_ALLOW = " 10.1.0.0/16 , ::1/128 "
    assert scrape(anon_client, REMOTE_ADDR="10.1.200.3")["batches_queue_depth"][()] == 0
    assert scrape(anon_client, REMOTE_ADDR="::1")["batches_queue_depth"][()] == 0
    assert refused(anon_client.get("/metrics", REMOTE_ADDR="127.0.0.1"))
    # With a token too, the listed network still needs none, and the token works from anywhere.
    settings.BATCHES_METRICS_TOKEN = "scrape-secret"
    assert scrape(anon_client, REMOTE_ADDR="10.1.0.9")["batches_queue_depth"][()] == 0
    assert refused(anon_client.get("/metrics", REMOTE_ADDR="203.0.113.9"))
    assert scrape(anon_client, REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-secret")["batches_queue_depth"][()] == 0


@pytest.mark.parametrize("bad", ["127.0.0.1/33", "localhost", "10.0.0.5/8", "fe80::1/129", "127.0.0.1/32;::1/128"])
def test_a_malformed_network_is_a_configuration_error_naming_setting_and_value(db, anon_client, settings, bad):
    """A typo is not silently 'nobody' (or, with host bits set as in 10.0.0.5/8, a whole
    network where one host was meant)."""
    settings.BATCHES_METRICS_ALLOW = f"::1/128,{bad}"
    with pytest.raises(ImproperlyConfigured, match="BATCHES_METRICS_ALLOW") as error:
        anon_client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert repr(bad) in str(error.value)


def test_usage_histograms_per_tool_match_the_attempts(alice_client, anon_client, catalog, settings):
    """batches_attempt_cpu_seconds and batches_attempt_max_rss_bytes: gauge histograms of
    the attempts that ended in the last hour, per tool, equal to what their rows say."""
    from jobs.executors.base import Outcome
    from jobs.executors.usage import Usage
    from jobs.models import Attempt
    from tests.test_api_contract import run_attempts

    settings.BATCHES_METRICS_ALLOW = "127.0.0.1/32"
    figures = [(0.5, 12.0), (2.0, 300.0), (40.0, 300.0), (None, None)]  # (cpu-seconds, max RSS MiB)
    batch_id = alice_client.post(
        "/batches", submission(catalog, jobs=[{"args": {"message": str(i)}} for i in range(len(figures))]), format="json"
    ).json()["batch_id"]
    for job, (cpu, rss) in zip(Job.objects.filter(batch_id=batch_id).order_by("index"), figures, strict=True):
        run_attempts(job.pk, [Outcome(str(job.pk), 1, succeeded=True, exit_code=0, reason_code="succeeded", usage=Usage(rss, cpu, 1.0))])
    old = Job.objects.filter(batch_id=batch_id).order_by("index").first()
    Attempt.objects.filter(job=old).update(end_time=timezone.now() - timedelta(hours=2))  # out of the window
    samples = scrape(anon_client)
    cpu = {float(dict(labels)["le"]): value for labels, value in samples["batches_attempt_cpu_seconds_bucket"].items()}
    assert all(dict(labels)["tool"] == "echo" for labels in samples["batches_attempt_cpu_seconds_bucket"])
    assert (cpu[1.0], cpu[10.0], cpu[60.0], cpu[float("inf")]) == (0, 1, 2, 2)
    assert samples["batches_attempt_cpu_seconds_gsum"][(("tool", "echo"),)] == 42.0
    assert samples["batches_attempt_cpu_seconds_gcount"][(("tool", "echo"),)] == 2
    rss = {float(dict(labels)["le"]): value for labels, value in samples["batches_attempt_max_rss_bytes_bucket"].items()}
    mib = 1 << 20
    assert (rss[16.0 * mib], rss[256.0 * mib], rss[1024.0 * mib], rss[float("inf")]) == (0, 0, 2, 2)
    assert samples["batches_attempt_max_rss_bytes_gsum"][(("tool", "echo"),)] == 600.0 * mib
