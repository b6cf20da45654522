"""Run the event listener: lifecycle events and periodic reconciliation of every host."""

from django.core.management.base import BaseCommand

from hosts.listener import Listener


class Command(BaseCommand):
    help = "Listen to libvirt lifecycle events on every host and reconcile periodically."

    def add_arguments(self, parser):
        parser.add_argument("--reconcile-seconds", type=float, default=None)

    def handle(self, *args, reconcile_seconds=None, **options):
        listener = Listener(reconcile_seconds=reconcile_seconds)
        try:
            listener.run()
        except KeyboardInterrupt:
            listener.stop.set()
