"""The API's JSON renderer (orjson) writes the bytes DRF's own renderer wrote."""

import datetime
import decimal
import uuid

import pytest
from rest_framework.renderers import JSONRenderer

from batchsite.renderers import FastJSONRenderer

SAMPLES = [
    {"job_id": uuid.UUID("01a227e2-2b7a-7c2b-8d6b-6570bdfb638c"), "status": "FAILED", "reason": "exit code 1"},
    [{"argument_key": "message", "argument_value": 'héllo \u2603 "quoted" \\ \n tab\t'}],
    {"nested": {"list": [1, 2.5, True, None, "x"]}, "empty": [], "zero": 0},
    {"price": decimal.Decimal("1.50"), "when": datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)},
    {"big": 10**30},  # past 64 bits: orjson refuses, the fallback writes it
    {"</script>": "<b>&amp;</b>"},
]


@pytest.mark.parametrize("data", SAMPLES)
def test_the_same_bytes_as_drfs_renderer(data):
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


def test_nothing_renders_as_an_empty_body_and_indentation_is_honoured():
    assert FastJSONRenderer().render(None) == b""
    indented = FastJSONRenderer().render({"a": 1}, "application/json; indent=2")
    assert indented == b'{\n  "a": 1\n}'
