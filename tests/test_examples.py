"""The example job files the README names are ones the client accepts, for the demo
catalog's echo tool."""

from pathlib import Path

import yaml

from client.cli import _jobs_from_file
from tests.worker_helpers import ROOT


def _echo_parameters() -> set[str]:
    catalog = yaml.safe_load((ROOT / "catalog" / "demo.yaml").read_text())
    echo = next(tool for tool in catalog["tools"] if tool["name"] == "echo")
    return set(echo["parameters"])


def test_the_readme_names_the_example_files():
    readme = (ROOT / "README.md").read_text()
    assert "--from-file examples/echo-jobs.csv" in readme
    assert "examples/echo-jobs.jsonl" in readme


def test_the_example_csv_and_jsonl_are_jobs_for_echo():
    for name in ("echo-jobs.csv", "echo-jobs.jsonl"):
        jobs = _jobs_from_file(Path(ROOT / "examples" / name))
        assert len(jobs) == 2
        assert all(set(job) == _echo_parameters() for job in jobs), jobs
    assert _jobs_from_file(ROOT / "examples" / "echo-jobs.csv")[1] == {"message": "a row, with a comma"}
