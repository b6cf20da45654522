"""Run the event listener (libvirt lifecycle events of every host) and the console service (every serial console
stream, shared by the viewers in all web processes)."""

from django.core.management.base import BaseCommand

from hosts import console_service
from hosts.listener import Listener


class Command(BaseCommand):
    help = "Listen to libvirt lifecycle events on every host (periodic sweeps are celery beat's), and serve consoles."

    def handle(self, *args, **options):
        console_service.run_in_thread()
        listener = Listener()
        try:
            listener.run()
        except KeyboardInterrupt:
            listener.stop.set()
