"""Datetimes into protobuf Timestamps, the one way every service does it."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2


def timestamp_message(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """The Timestamp of ``value`` (a naive datetime is taken as UTC, as the catalog stores them), or None."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return stamp
