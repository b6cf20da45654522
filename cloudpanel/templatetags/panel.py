from django import template

register = template.Library()

_BADGES = {
    "running": "success", "online": "success", "succeeded": "success",
    "stopped": "secondary", "new": "info", "pending": "info",
    "paused": "warning", "suspended": "warning", "offline": "warning", "running_action": "primary",
    "crashed": "danger", "error": "danger", "failed": "danger", "deleted": "dark",
}


@register.filter
def badge(value: str) -> str:
    """Bootstrap colour for a status value."""
    return _BADGES.get(value, "secondary")


@register.filter
def percent(part: int, whole: int) -> int:
    return min(100, round(100 * part / whole)) if whole else 0


@register.filter
def took(action) -> str:
    """How long an action ran, e.g. '0.4 s' or '2 min 5 s'; empty while it runs."""
    if not (action.started_at and action.finished_at):
        return ""
    seconds = (action.finished_at - action.started_at).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"
