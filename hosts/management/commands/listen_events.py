"""Run the event listener: libvirt lifecycle events of every host."""

from django.core.management.base import BaseCommand

from hosts.listener import Listener


class Command(BaseCommand):
    help = "Listen to libvirt lifecycle events on every host (periodic sweeps are celery beat's)."

    def handle(self, *args, **options):
        listener = Listener()
        try:
            listener.run()
        except KeyboardInterrupt:
            listener.stop.set()
