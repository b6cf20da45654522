"""Print the README's technology table, from the capability table the code reads (so that it cannot drift)."""

from django.core.management.base import BaseCommand

from hosts import capabilities, hypervisor
from hosts.choices import Technology

PROVEN = {"live": "live, real guests here"}


def markdown() -> str:
    """One row per technology: its URI schemes, what CloudPanel does with it, how it was tested, what an operator
    provides; then the drivers libvirt no longer has."""
    lines = ["| Technology | URIs | What CloudPanel does with it | Tested | The operator provides |",
             "|---|---|---|---|---|"]
    for technology in Technology:
        row = capabilities.of(technology)
        schemes = ", ".join(f"`{scheme}://`" for scheme in hypervisor.schemes_of(technology))
        does = ", ".join(label for label, has in capabilities.features(technology) if has)
        lines.append(f"| {technology.label} | {schemes} | lifecycle, reconcile, {does} | "
                     f"{PROVEN.get(row.proven, row.proven)} | {row.operator or '—'} |")
    for scheme, reason in hypervisor.REMOVED_DRIVERS.items():
        lines.append(f"| {reason.split(':')[0]} | `{scheme}://` | refused: {reason.split(': ', 1)[1]} | — | — |")
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Print the technology table of the README (Markdown)."

    def handle(self, *args, **options) -> None:
        self.stdout.write(markdown())
