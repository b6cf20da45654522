"""The audit log as CSV, streamed row by row."""

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC

from tenants.models import AuditEvent

COLUMNS = ["time_utc", "user", "tenant", "on_behalf", "channel", "action", "object_type", "object_id", "object",
           "address", "result", "status", "detail", "duration_seconds"]


class _Echo:
    def write(self, value: str) -> str:
        return value


def cell(value: object) -> str:
    """A spreadsheet would run a cell starting with = + - @ as a formula; such cells are quoted with '."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def audit_csv_rows(events: Iterable[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(COLUMNS)
    for event in events.iterator(chunk_size=2000) if hasattr(events, "iterator") else events:
        duration = event.duration
        yield writer.writerow([cell(v) for v in (
            event.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), event.username, event.tenant_name,
            "yes" if event.on_behalf else "no", event.channel, event.action, event.target_type, event.target_id,
            event.target_name, event.address, event.result, event.status_code, event.detail,
            f"{duration.total_seconds():.1f}" if duration is not None else "",
        )])
