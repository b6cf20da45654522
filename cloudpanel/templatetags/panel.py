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
