"""Run the event listener (libvirt lifecycle events) and the console service (serial console streams, shared by
the viewers in all web processes): for every host, or with per-host workers, on a host's machine for that host
(its consoles and graphical displays too)."""

from django.core.management.base import BaseCommand, CommandError

from hosts import console_service
from hosts.listener import Listener
from hosts.models import Host


class Command(BaseCommand):
    help = "Listen to libvirt lifecycle events on every host (periodic sweeps are celery beat's), and serve consoles."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", type=int, action="append", dest="hosts", metavar="ID",
                            help="only this host (again for more), with CLOUDPANEL_HOST_QUEUES: run on its machine")

    def handle(self, *args, hosts: list[int] | None = None, **options) -> None:
        if console_service.per_host() and not hosts:
            raise CommandError("with CLOUDPANEL_HOST_QUEUES each host runs a listener of its own, on its machine: "
                               "manage.py listen_events --host ID")
        if hosts and not console_service.per_host():
            raise CommandError("--host is for per-host workers: set CLOUDPANEL_HOST_QUEUES=1 (and REDIS_URL)")
        if hosts and (unknown := set(hosts) - set(Host.objects.filter(pk__in=hosts).values_list("pk", flat=True))):
            raise CommandError(f"no host with id {', '.join(map(str, sorted(unknown)))}")
        console_service.run_in_thread([console_service.channel_for(h) for h in hosts] if hosts else None)
        listener = Listener(host_ids=hosts)
        try:
            listener.run()
        except KeyboardInterrupt:
            listener.stop.set()
