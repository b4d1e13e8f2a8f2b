"""JSON responses written by orjson: a 1,000-job page spent a quarter of its time in the
standard library's encoder.

The bytes are what DRF's own JSONRenderer writes with this project's settings (compact,
UTF-8, U+2028 and U+2029 escaped for JSON put into a script), with one difference: a
float is written in its shortest form (1e-7 where DRF writes 1e-07; the same number to
any JSON reader; only tool parameters' defaults are floats). tests/test_renderers.py
compares them. Types orjson does not know (Decimal, lazy translations...) go through
DRF's encoder; a client asking for indentation gets DRF's renderer."""

from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder


class FastJSONRenderer(JSONRenderer):
    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: dict | None = None) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type or "", renderer_context or {}):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            # Datetimes through DRF's encoder too: it writes UTC as "Z", orjson "+00:00".
            rendered = orjson.dumps(data, default=JSONEncoder().default, option=orjson.OPT_PASSTHROUGH_DATETIME)
        except orjson.JSONEncodeError:
            # What orjson refuses but the standard encoder writes (an integer past 64
            # bits, a non-string key): the slow path, same answer as before.
            return super().render(data, accepted_media_type, renderer_context)
        if b"\xe2\x80" in rendered:  # as DRF does: line and paragraph separators escaped
            rendered = rendered.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return rendered
