from django import template

register = template.Library()

_BADGES = {
    "running": "success", "online": "success", "succeeded": "success",
    "stopped": "secondary", "new": "info", "pending": "info",
    "paused": "warning", "suspended": "warning", "offline": "warning", "running_action": "primary",
    "crashed": "danger", "error": "danger", "missing": "danger", "unknown": "dark", "failed": "danger",
    "deleted": "dark",
    "available": "success", "uploading": "info", "importing": "info", "inspecting": "primary",
    "active": "success", "none": "light", "creating": "info",
}


@register.filter
def badge(value: str) -> str:
    """Bootstrap colour for a status value."""
    return _BADGES.get(value, "secondary")


@register.filter
def percent(part: int, whole: int) -> int:
    return min(100, round(100 * part / whole)) if whole else 0


@register.filter
def tax_percent(rate) -> str:
    """A tax rate as a percentage, exactly: 0.2 → 20, 0.075 → 7.5."""
    return f"{(rate * 100).normalize():f}"


@register.filter
def took(action) -> str:
    """How long an action ran, e.g. '0.4 s' or '2 min 5 s'; empty while it runs."""
    if not (action.started_at and action.finished_at):
        return ""
    return seconds_text((action.finished_at - action.started_at).total_seconds())


@register.filter
def duration(delta) -> str:
    """A timedelta as '0.4 s', '2 min 5 s' or '3 h 2 min'."""
    return "" if delta is None else seconds_text(delta.total_seconds())


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


@register.filter
def chosen(value: object, field) -> bool:
    """Whether a choice is selected in a (single or multiple) select field's current value."""
    current = field.value()
    if isinstance(current, (list, tuple)):
        return str(value) in {str(v) for v in current}
    return str(value) == str(current)



@register.filter
def bytes_rate(value: float | None) -> str:
    """Bytes per second in binary units: 1536 → '1.5 KiB/s'; '—' when not known."""
    if value is None:
        return "—"
    units, i = ("B", "KiB", "MiB", "GiB", "TiB"), 0
    while abs(value) >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    return f"{value:.0f} B/s" if i == 0 else f"{value:.1f} {units[i]}/s"
