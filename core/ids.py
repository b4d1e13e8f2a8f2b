"""Time-ordered UUIDs (the UUIDv7 layout of RFC 9562).

IDs stay opaque to clients, but sorting by them sorts by creation time, so cursor
pagination over the primary key lists rows in the order they were made.
"""

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 68) & 0xFFF) << 64
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)
