"""Set up demo data: an admin, a tenant with its own admin, member and viewer, on a rate plan, demo hosts, and the
library's tiny guest (a public boot kernel) and busybox container image when they were built. Idempotent."""

import os
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from billing import services as billing_services
from billing.models import RatePlan, TenantBilling
from hosts import services as host_services
from hosts.architectures import ARCHES, DEFAULT_ARCH
from hosts.models import Host
from images import services as image_services
from images.choices import SourceFormat, Visibility
from images.management.commands.add_image import add_file
from images.models import BootKernel
from tenants.models import Tenant
from tenants.services import add_member, create_tenant


class Command(BaseCommand):
    help = "Create the demo admin (printing the login), a demo tenant and demo hosts."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default=os.environ.get("CLOUDPANEL_DEMO_PASSWORD", "cloudpanel-demo"))
        parser.add_argument("--test-uri", default="test:///default",
                            help="the test driver host: test+unix:///default shares libvirtd's across processes")
        parser.add_argument("--host-uri", action="append", default=[],
                            help="name=uri of a host to register (repeatable)")
        parser.add_argument("--guest-dir", type=Path, help="the tiny guest's vmlinuz and initrd.img: a public boot "
                                                           "kernel of the library")
        parser.add_argument("--container-image", type=Path, help="a root-filesystem archive: a public container "
                                                                 "image of the library")

    def handle(self, *args, username: str, password: str, test_uri: str, host_uri: list[str],
               guest_dir: Path | None, container_image: Path | None, **options):
        User = get_user_model()
        admin, created = User.objects.get_or_create(username=username, defaults={"is_staff": True,
                                                                                  "is_superuser": True})
        if created:
            admin.set_password(password)
            admin.save()
        tenant = Tenant.objects.filter(name="demo").first() or create_tenant(name="demo")
        add_member(tenant=tenant, user=admin, role="admin")
        # Self-service users of the demo tenant, to see the panel as a tenant does.
        for name, role in (("alice", "admin"), ("bob", "member"), ("carol", "viewer")):
            user, made = User.objects.get_or_create(username=name)
            if made:
                user.set_password(password)
                user.save()
            if not user.memberships.filter(tenant=tenant).exists():
                add_member(tenant=tenant, user=user, role=role)
        # A rate plan for the demo tenant, so that its usage is metered and billed from now on.
        plan = RatePlan.objects.filter(name="Standard").first() or billing_services.create_plan(
            name="Standard", currency="EUR", description="Demo prices", effective_from=timezone.now().replace(
                minute=0, second=0, microsecond=0), vcpu_hour="0.012", ram_gib_hour="0.004",
            disk_gib_month="0.05", snapshot_gib_month="0.03", licence_hour="0.02", address_hour="0.005",
            monthly_fee="5.00")
        if not TenantBilling.objects.filter(tenant=tenant).exists():
            billing_services.set_tenant_billing(tenant=tenant, plan=plan, tax_rate="0.2")
        hosts = [("test-driver", test_uri, "default-pool", "auto")]
        for item in host_uri:
            name, _, uri = item.partition("=")
            hosts.append((name, uri, "default", "tcg"))
        for name, uri, pool, accelerator in hosts:
            host = Host.objects.filter(uri=uri).first()
            if host is None:
                host_services.register_host(name=name, uri=uri, accelerator=accelerator, storage_pool=pool)
            else:
                host_services.request_probe(host=host)
        # The tiny guest and the container image are built for this machine's own architecture.
        native = os.uname().machine if os.uname().machine in ARCHES else DEFAULT_ARCH
        if guest_dir is not None:
            # (it boots to its shell in 96 MiB of RAM, not in 64)
            kernel = add_file(guest_dir / "vmlinuz", name="tiny guest kernel", declared_format=SourceFormat.KERNEL,
                              min_memory_mib=96, arch=native)
            initrd = add_file(guest_dir / "initrd.img", name="tiny guest initrd", declared_format=SourceFormat.INITRD,
                              arch=native)
            if not BootKernel.objects.filter(kernel=kernel, initrd=initrd).exists():
                image_services.create_boot_kernel(user=admin, tenant=None, visibility=Visibility.PUBLIC,
                                                  name=f"Tiny guest (busybox shell, {native})", kernel=kernel,
                                                  initrd=initrd, arch=native)
        if container_image is not None:
            add_file(container_image, name="busybox system container", declared_format=SourceFormat.TAR,
                     arch=native)
        shown = password if created else "(unchanged password)"
        self.stdout.write(self.style.SUCCESS(
            f"Sign in as {username} / {shown} (platform admin), or as alice, bob or carol with the same password "
            "(demo tenant's admin, member and viewer)"
        ))
