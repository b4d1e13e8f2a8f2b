"""Dates and times in the admin as operators read them: ISO order, to the second (the
English locale's default, "Nov. 29, 2026, 3:34 p.m.", hid the order of events within a
minute)."""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
