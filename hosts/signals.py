"""What hosts tell the apps above them, which connect to these in their AppConfig.ready (hosts imports none
of them)."""

from django.dispatch import Signal

# A libvirt lifecycle event: host, domain_uuid, status (None: the domain is gone), event, observed_at.
domain_event = Signal()
# A host's domains were read in one call: host, states (uuid → status; None if the host could not tell), observed_at.
host_observed = Signal()
# A host not heard from for CLOUDPANEL_HOST_DOWN_SECONDS: host, last_seen_at (when it last answered; None: never).
host_lost = Signal()
