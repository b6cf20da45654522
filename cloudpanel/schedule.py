"""The platform's periodic work, one schedule for both modes: Celery beat runs it with separate processes
(`celery -A cloudpanel beat`), the embedded mode runs the same beat in a thread of the web process.

Tasks are named, not imported: the schedule wires apps together, as the root URLconf does.
"""

from datetime import timedelta

from django.conf import settings


def beat_schedule() -> dict[str, dict]:
    """Every periodic task: lost operations, reconcile sweeps (the safety net under libvirt's events), stale images,
    scheduled backups, metrics, notifications, billing."""
    sweep = timedelta(seconds=settings.CLOUDPANEL_RECONCILE_SECONDS)
    return {
        # operations whose worker died: run again or failed, within the lease and a third of it
        "recover-lost-actions": {"task": "instances.tasks.recover_lost_actions",
                                 "schedule": timedelta(seconds=settings.CLOUDPANEL_LEASE_SECONDS / 3)},
        "reconcile-hosts": {"task": "hosts.tasks.reconcile_hosts", "schedule": sweep},
        # hosts whose libvirt or worker went silent: offline, their instances unknown (run by any worker)
        "check-hosts": {"task": "hosts.tasks.check_hosts", "schedule": sweep},
        "expire-stale-images": {"task": "images.tasks.expire_stale_images", "schedule": sweep},
        # instances' backup schedules: those due are backed up (a busy one at the next tick)
        "scheduled-backups": {"task": "instances.tasks.run_scheduled_backups", "schedule": timedelta(minutes=1)},
        # resource use of every online host and its instances, read by the host's worker; averaged and expired
        "sample-metrics": {"task": "metrics.tasks.sample_hosts",
                           "schedule": timedelta(seconds=settings.CLOUDPANEL_METRICS_SECONDS)},
        "roll-up-metrics": {"task": "metrics.tasks.roll_up", "schedule": timedelta(minutes=1)},
        "evaluate-alerts": {"task": "metrics.tasks.evaluate_alerts", "schedule": timedelta(seconds=30)},
        # notifications: retries whose time came (and first attempts the broker could not take), quota levels
        "send-notifications": {"task": "notifications.tasks.send_due", "schedule": timedelta(seconds=10)},
        "check-quotas": {"task": "notifications.tasks.check_quotas", "schedule": timedelta(minutes=1)},
        "prune-notifications": {"task": "notifications.tasks.prune", "schedule": timedelta(hours=1)},
        # meter usage up to the last full hour, invoice closed months
        "close-books": {"task": "billing.tasks.close_books",
                        "schedule": timedelta(seconds=settings.CLOUDPANEL_BILLING_SECONDS)},
    }
