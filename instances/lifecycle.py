"""The instance state machine: which operation applies from which status, and what it sets."""

from instances.choices import Operation, Status, TaskState

# Operations with their own request (a create's spec, a media change's ISO), not a bare button or route.
SPECIAL = (Operation.CREATE, Operation.MEDIA, Operation.ATTACH_NIC, Operation.DETACH_NIC, Operation.SNAPSHOT,
           Operation.REVERT, Operation.UNSNAPSHOT, Operation.RESIZE, Operation.REBUILD,
           Operation.RENAME, Operation.CAPTURE, Operation.CLONE, Operation.BACKUP, Operation.RESTORE,
           Operation.ATTACH_VOLUME, Operation.DETACH_VOLUME,
           Operation.EXTEND_VOLUME, Operation.MIGRATE)

TASK_STATE_OF = {
    Operation.CREATE: TaskState.CREATING,
    Operation.START: TaskState.STARTING,
    Operation.SHUTDOWN: TaskState.SHUTTING_DOWN,
    Operation.POWEROFF: TaskState.POWERING_OFF,
    Operation.REBOOT: TaskState.REBOOTING,
    Operation.SUSPEND: TaskState.SUSPENDING,
    Operation.RESUME: TaskState.RESUMING,
    Operation.MEDIA: TaskState.CHANGING_MEDIA,
    Operation.ATTACH_NIC: TaskState.PLUGGING,
    Operation.DETACH_NIC: TaskState.UNPLUGGING,
    Operation.SNAPSHOT: TaskState.SNAPSHOTTING,
    Operation.REVERT: TaskState.REVERTING,
    Operation.UNSNAPSHOT: TaskState.UNSNAPSHOTTING,
    Operation.RESIZE: TaskState.RESIZING,
    Operation.REBUILD: TaskState.REBUILDING,
    Operation.RENAME: TaskState.RENAMING,
    Operation.CAPTURE: TaskState.CAPTURING,
    Operation.CLONE: TaskState.CLONING,
    Operation.BACKUP: TaskState.BACKING_UP,
    Operation.RESTORE: TaskState.RESTORING,
    Operation.ATTACH_VOLUME: TaskState.ATTACHING_VOLUME,
    Operation.DETACH_VOLUME: TaskState.DETACHING_VOLUME,
    Operation.EXTEND_VOLUME: TaskState.EXTENDING_VOLUME,
    Operation.MIGRATE: TaskState.MIGRATING,
    Operation.DELETE: TaskState.DELETING,
}

ALLOWED_FROM = {
    Operation.CREATE: {Status.PENDING, Status.ERROR},
    Operation.START: {Status.STOPPED, Status.CRASHED, Status.ERROR},
    Operation.SHUTDOWN: {Status.RUNNING},
    Operation.POWEROFF: {Status.RUNNING, Status.PAUSED, Status.SUSPENDED, Status.CRASHED, Status.ERROR},
    Operation.REBOOT: {Status.RUNNING},
    Operation.SUSPEND: {Status.RUNNING},
    Operation.RESUME: {Status.PAUSED, Status.SUSPENDED},
    Operation.MEDIA: {Status.RUNNING, Status.STOPPED, Status.PAUSED},
    Operation.ATTACH_NIC: {Status.RUNNING, Status.STOPPED, Status.PAUSED},
    Operation.DETACH_NIC: {Status.RUNNING, Status.STOPPED, Status.PAUSED},
    Operation.SNAPSHOT: {Status.RUNNING, Status.STOPPED, Status.PAUSED},
    Operation.REVERT: {Status.RUNNING, Status.STOPPED, Status.PAUSED, Status.CRASHED},
    Operation.UNSNAPSHOT: {Status.RUNNING, Status.STOPPED, Status.PAUSED, Status.CRASHED, Status.ERROR},
    Operation.RESIZE: {Status.RUNNING, Status.STOPPED, Status.PAUSED},  # vCPUs and RAM: stopped only (services)
    Operation.REBUILD: {Status.RUNNING, Status.STOPPED, Status.PAUSED, Status.CRASHED, Status.ERROR},
    Operation.RENAME: set(Status) - {Status.DELETED, Status.PENDING, Status.UNKNOWN},
    Operation.CAPTURE: {Status.STOPPED},  # a consistent disk: nothing writes to it meanwhile
    Operation.CLONE: {Status.STOPPED},
    Operation.BACKUP: {Status.RUNNING, Status.STOPPED, Status.PAUSED},
    Operation.RESTORE: {Status.STOPPED, Status.ERROR, Status.CRASHED},  # over its disk: nothing may run on it
    Operation.ATTACH_VOLUME: {Status.RUNNING, Status.STOPPED, Status.PAUSED},
    Operation.DETACH_VOLUME: {Status.RUNNING, Status.STOPPED, Status.PAUSED, Status.CRASHED},
    Operation.EXTEND_VOLUME: set(Status) - {Status.DELETED, Status.PENDING, Status.UNKNOWN},
    Operation.MIGRATE: {Status.RUNNING, Status.PAUSED, Status.STOPPED},  # live while it runs, else cold
    Operation.DELETE: set(Status) - {Status.DELETED},  # from unknown: platform admins, from the panel alone
}


def allowed_operations(status: str, task_state: str | None) -> list[str]:
    """The operations a user may request now (none while one is in flight)."""
    if task_state:
        return []
    return [op.value for op in Operation if op not in SPECIAL and status in ALLOWED_FROM[op]]
