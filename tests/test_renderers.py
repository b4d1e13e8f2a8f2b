"""The API's JSON renderer (orjson) writes the bytes DRF's own renderer wrote."""

import datetime
import decimal
import json
import uuid

import pytest
from rest_framework.renderers import JSONRenderer

from core.renderers import FastJSONRenderer

SAMPLES = [
    {"job_id": uuid.UUID("01a227e2-2b7a-7c2b-8d6b-6570bdfb638c"), "status": "FAILED", "reason": "exit code 1"},
    [{"argument_key": "message", "argument_value": 'héllo \u2603 "quoted" \\ \n tab\t'}],
    {"nested": {"list": [1, 2.5, True, None, "x"]}, "empty": [], "zero": 0},
    {"price": decimal.Decimal("1.50"), "when": datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)},
    {"big": 10**30},  # past 64 bits: orjson refuses, the fallback writes it
    {"</script>": "<b>&amp;</b>"},
    {"name": "line\u2028separator\u2029paragraph"},  # escaped, as DRF does for JSON in a script
    {"floats": [0.5, 2.0, 1e300, -3.25]},
]


@pytest.mark.parametrize("data", SAMPLES)
def test_the_same_bytes_as_drfs_renderer(data):
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


def test_nothing_renders_as_an_empty_body_and_indentation_is_honoured():
    assert FastJSONRenderer().render(None) == b""
    indented = FastJSONRenderer().render({"a": 1}, "application/json; indent=2")
    assert indented == b'{\n  "a": 1\n}'


def test_floats_are_the_same_numbers_in_their_shortest_form():
    """The one difference: orjson writes 1e-7 where DRF writes 1e-07 (the same number to
    any JSON reader)."""
    data = {"default": 1e-7, "others": [1e-05, 2.5e-05, 123456789.125]}
    assert FastJSONRenderer().render(data) == b'{"default":1e-7,"others":[0.00001,0.000025,123456789.125]}'
    assert json.loads(FastJSONRenderer().render(data)) == json.loads(JSONRenderer().render(data)) == data
