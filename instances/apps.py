from django.apps import AppConfig


class InstancesConfig(AppConfig):
    name = "instances"

    def ready(self) -> None:
        from hosts.services import register_disk_holder, register_holder
        from instances import (
            migration,
            receivers,  # noqa: F401  (connects to what hosts report)
        )
        from instances.models import Instance, Snapshot, Volume
        from tenants.quotas import register_counter

        register_counter(Instance.objects.quota_usage, ("instances", "vcpus", "memory_mib", "disk_gib"))
        register_counter(Snapshot.objects.quota_usage, ("snapshots",))
        register_counter(Volume.objects.quota_usage, ("volumes", "volume_gib"))
        register_disk_holder(Snapshot.objects.pool_usage)
        register_disk_holder(Volume.objects.pool_usage)
        register_holder(migration.inbound)
