"""The isolation matrix: every page, API route and websocket × every role × own / other tenant's object.

The routes come from the URL configuration, the API router and the websocket routing; a
route without an entry in MATRIX (or WEBSOCKETS) fails the build. Each cell runs in a
transaction that is rolled back, so cells do not see each other's changes; no task
runs, and a spy on the task queue and the hypervisor proves that a request on another
tenant's object never got as far as either.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from billing.invoicing import issue
from billing.models import Invoice, InvoiceLine, TenantBilling
from billing.services import create_plan, set_tenant_billing
from cloudpanel.asgi import application
from hosts.models import HostDomain
from images.choices import ImageStatus
from images.models import Image, Template
from instances.choices import ActionStatus, Operation, SnapshotStatus, Status
from instances.lifecycle import ALLOWED_FROM, SPECIAL
from instances.models import Backup, Instance, InstanceAction, ServerGroup, Snapshot, Volume
from instances.routing import websocket_urlpatterns
from metrics.models import AlertRule
from networks.security import add_rule, create_group
from networks.services import create_network, create_port, reserve
from notifications.models import Notification, Subscription
from tenants.choices import Role
from tenants.models import AuditEvent, Membership
from tenants.services import create_api_token
from tests.factories import make_boot_kernel, make_host, make_instance, make_tenant, make_user

ANON, VIEWER, MEMBER, TADMIN, ADMIN = "anonymous", "viewer", "member", "tenant admin", "platform admin"
ROLES = (ANON, VIEWER, MEMBER, TADMIN, ADMIN)
OWN, OTHER, NONE = "own", "other", "-"
OPERATORS = (MEMBER, TADMIN, ADMIN)

LOGIN = (302, "/login/")
ADMIN_LOGIN = (302, "/admin/login/")


@dataclass
class Cell:
    """What one request should get: a status (or a redirect prefix), and whether it may queue work."""

    status: int | tuple[int, str]
    effect: bool = False
    shows: bool | None = None  # for lists: whether the object's marker is in the response


@dataclass
class Case:
    method: str
    kind: str | None  # the object whose id goes in the URL (None: no object)
    expect: Callable[[str, str], Cell]
    body: Callable[[dict, str], dict] | None = None
    url_kwargs: dict = field(default_factory=dict)
    marker: str | None = None  # for lists: the object kind whose marker must (not) show
    url_objects: dict = field(default_factory=dict)  # further URL parts: name → the world object's kind


# --- expected outcomes ---------------------------------------------------------------------


def anon(api: bool) -> Cell:
    return Cell(401 if api else LOGIN)


def read(api: bool, visible: tuple[str, ...] = (VIEWER, MEMBER, TADMIN, ADMIN)):
    def expect(role, which):
        if role == ANON:
            return anon(api)
        if which == OTHER and role != ADMIN:
            return Cell(404)
        return Cell(200 if role in visible else 404)
    return expect


def listing(api: bool, visible_own: tuple[str, ...] = (VIEWER, MEMBER, TADMIN, ADMIN),
            allowed: tuple[str, ...] = (VIEWER, MEMBER, TADMIN, ADMIN)):
    def expect(role, which):
        if role == ANON:
            return anon(api)
        if role not in allowed:
            return Cell(403)
        return Cell(200, shows=role == ADMIN or (which == OWN and role in visible_own))
    return expect


def operate(api: bool, ok: int):
    """Changes of a tenant's object: operators only; viewers are refused (403, or a message on pages)."""
    def expect(role, which):
        if role == ANON:
            return anon(api)
        if which == OTHER and role != ADMIN:
            return Cell(404)
        if role == VIEWER:
            return Cell(403 if api else 302)
        return Cell(ok, effect=ok in (202, 302))
    return expect


def manage(api: bool, ok: int, *, refused: int = 403):
    """Member administration: the tenant's admins and platform admins."""
    def expect(role, which):
        if role == ANON:
            return anon(api)
        if which == OTHER and role != ADMIN:
            return Cell(404)
        return Cell(ok if role in (TADMIN, ADMIN) else refused)
    return expect


def create_in(api: bool, ok: int | tuple[int, str], *, roles: tuple[str, ...], refused_own: int, refused_other: int):
    """A create naming a tenant in its body: other tenants look like no tenant at all."""
    def expect(role, which):
        if role == ANON:
            return anon(api)
        if role == ADMIN:
            return Cell(ok, effect=ok == 202)
        if which == OTHER:
            return Cell(refused_other)
        return Cell(ok, effect=ok == 202) if role in roles else Cell(refused_own)
    return expect


def platform(api: bool, ok: int):
    def expect(role, which):
        if role == ADMIN:
            return Cell(ok)
        if api:
            return Cell(401 if role == ANON else 403)
        return Cell(ADMIN_LOGIN)
    return expect


def admin_operate(api: bool, ok: int):
    """Platform admins' operations on a tenant's object: another tenant's is a 404, the tenant's own members are
    refused (403, or back to the page)."""
    def expect(role, which):
        if role == ANON:
            return anon(api)
        if which == OTHER and role != ADMIN:
            return Cell(404)
        if role != ADMIN:
            return Cell(403 if api else 302)
        return Cell(ok)
    return expect


def admins_only_page(role, which):
    """Tenant pages that only platform admins may post to answer others with 403."""
    return anon(False) if role == ANON else Cell(302 if role == ADMIN else 403)


def managed(api: bool, ok: int):
    """What only the tenant's admins (and platform admins) see at all, such as subscriptions with their secrets:
    no such object for anyone else."""
    def expect(role, which):
        if role == ANON:
            return anon(api)
        return Cell(ok if role == ADMIN or (role == TADMIN and which == OWN) else 404)
    return expect


def signed_in(api: bool, ok: int | tuple[int, str]):
    def expect(role, which):
        return anon(api) if role == ANON else Cell(ok)
    return expect


def anyone(ok: int | tuple[int, str]):
    return lambda role, which: Cell(ok)


def op_status(operation: str) -> int:
    """The world's instances run: an operation that does not apply to a running instance is a 409."""
    return 202 if Status.RUNNING in ALLOWED_FROM[operation] else 409


def token_read(api: bool):
    """Tokens are their user's; the tenant's admins see all of the tenant's."""
    return read(api, visible=(MEMBER, TADMIN, ADMIN))


def audit_read(api: bool):
    def expect(role, which):
        if role == ANON:
            return anon(api)
        if role in (VIEWER, MEMBER):
            return Cell(403)
        if which == OTHER and role != ADMIN:
            return Cell(404)
        return Cell(200)
    return expect


def admin_change(api: bool, ok: int):
    """Changes of a tenant's billing that only platform admins make: others are refused, or answered
    404 for another tenant's object."""
    def expect(role, which):
        if role == ANON:
            return anon(api)
        if which == OTHER and role != ADMIN:
            return Cell(404)
        return Cell(ok if role == ADMIN else 403)
    return expect


def adder_page(role, which):
    """Pages that add to the acting tenant: its operators and platform admins."""
    return anon(False) if role == ANON else Cell(403 if role == VIEWER else 200)


def import_body(world, which):
    # A literal public address: accepted without a DNS lookup; the rolled-back cell never queues the download.
    return {"url": "https://93.184.216.34/disk.qcow2", "name": "matrix", "os_type": "linux", "min_disk_gib": 0,
            "min_memory_mib": 0, "visibility": "private", "tenant": world[which]["tenant"].pk}


def page_change(role, which):
    """Page forms that change a tenant's object and refuse viewers outright."""
    if role == ANON:
        return anon(P)
    if which == OTHER and role != ADMIN:
        return Cell(404)
    return Cell(403 if role == VIEWER else 302)


def instance_body(world, which):
    return {"name": "matrix", "vcpus": 1, "memory_mib": 64, "boot_kernel": world["public_kernel"].pk,
            "tenant": world[which]["tenant"].pk}


def page_instance_body(world, which):
    return {**instance_body(world, which), "disk_gib": 0, "boot_source": "kernel"}


# --- the matrix ----------------------------------------------------------------------------

P, A = False, True  # page, API
PLATFORM_KINDS = ("host", "domain")  # the platform's objects: one each, no tenant

MATRIX: dict[str, list[Case]] = {
    "overview": [Case("GET", None, listing(P), marker="instance")],
    "login": [Case("GET", None, anyone(200))],
    "logout": [Case("POST", None, anyone((302, "/login/")))],
    "host-list": [Case("GET", None, platform(P, 200))],
    "technologies": [Case("GET", None, platform(P, 200))],
    "hot-spots": [Case("GET", None, signed_in(P, 200))],
    "prometheus": [Case("GET", None, anyone(403))],  # (a token or network setting lets a scraper in)
    "notification-list": [Case("GET", None, listing(P), marker="notification"),
                          Case("POST", None, signed_in(P, 302))],
    "subscription-list": [
        Case("GET", None, listing(P, visible_own=(TADMIN, ADMIN)), marker="subscription"),
        # (a tenant admin naming another tenant, no choice of the form, gets the form again: 200)
        Case("POST", None, lambda role, which: (
            anon(P) if role == ANON else Cell(302) if role == ADMIN or (role == TADMIN and which == OWN)
            else Cell(200) if role == TADMIN else Cell(403)),
             body=lambda w, x: {"name": "matrix", "channel": "email", "email": "m@example.org",
                                "tenant": w[x]["tenant"].pk}),
    ],
    "subscription-detail": [Case("GET", "subscription", managed(P, 200))],
    "alert-list": [
        Case("GET", None, listing(P), marker="alert_rule"),
        Case("POST", None, lambda role, which: (
            anon(P) if role == ANON else Cell(302) if role == ADMIN or (role == TADMIN and which == OWN)
            else Cell(200) if role == TADMIN else Cell(403)),
            body=lambda w, x: {"name": "matrix", "tenant": w[x]["tenant"].pk, "target": "instance",
                               "measure": "cpu", "comparison": "above", "threshold": "90", "minutes": "10"}),
    ],
    "alert-change": [Case("POST", "alert_rule", manage(P, 302), url_kwargs={"change": "disable"})],
    "subscription-change": [Case("POST", "subscription", managed(P, 302), url_kwargs={"change": "disable"})],
    "host-detail": [Case("GET", "host", platform(P, 200))],
    "host-command": [Case("POST", "host", platform(P, 302), url_kwargs={"command": "probe"})],
    "host-maintenance": [Case("GET", "host", platform(P, 200)),
                         Case("POST", "host", platform(P, 302), body=lambda w, x: {"enter": "0"})],
    "host-evacuation": [Case("GET", "host", platform(P, 200)),  # (an online host: refused, with the reason)
                        Case("POST", "host", platform(P, 302), body=lambda w, x: {"host_is_off": "1"})],
    "instance-adopt": [Case("POST", "domain", platform(P, 302),
                            body=lambda w, x: {"tenant": w[x]["tenant"].pk, "name": "adopted"})],
    "instance-list": [Case("GET", None, listing(P), marker="instance")],
    "instance-new": [
        Case("GET", None, signed_in(P, 200)),
        Case("POST", None, create_in(P, 302, roles=OPERATORS, refused_own=200, refused_other=200),
             body=page_instance_body),
    ],
    "instance-detail": [Case("GET", "instance", read(P))],
    "instance-operation": [Case("POST", "instance", operate(P, 302), url_kwargs={"operation": "reboot"})],
    "instance-media": [Case("POST", "instance", operate(P, 302), body=lambda w, x: {"image": w[x]["iso"].pk})],
    "instance-resize": [Case("POST", "instance", operate(P, 302),
                             body=lambda w, x: {"vcpus": 1, "memory_mib": 128, "disk_gib": 2})],
    # The world's instance boots a kernel: a rebuild from an image is refused (409, or back to the page).
    "instance-rebuild": [Case("POST", "instance", lambda role, which: replace(operate(P, 302)(role, which),
                                                                               effect=False),
                              body=lambda w, x: {"image": w[x]["disk"].pk})],
    "instance-rename": [Case("POST", "instance", operate(P, 302), body=lambda w, x: {"name": "renamed"})],
    # The world's instance runs: saving its disk is refused (409, or back to the page).
    "instance-save-image": [Case("POST", "instance", lambda role, which: replace(operate(P, 302)(role, which),
                                                                                  effect=False),
                                 body=lambda w, x: {"name": "golden"})],
    # The world's instance runs: a clone is refused (409, or back to the page).
    "instance-clone": [Case("POST", "instance", lambda role, which: replace(operate(P, 302)(role, which),
                                                                             effect=False),
                            body=lambda w, x: {"name": "twin"})],
    # The test driver cannot migrate: refused, back to the page.
    "instance-migrate": [Case("POST", "instance", admin_operate(P, 302), body=lambda w, x: {"host": ""})],
    "instance-migrate-cancel": [Case("POST", "instance", admin_operate(P, 302))],
    # (a setting of the instance: nothing is queued)
    "instance-maintenance-policy": [Case("POST", "instance", lambda role, which: replace(operate(P, 302)(role, which),
                                                                                          effect=False),
                                         body=lambda w, x: {"policy": "stop"})],
    # The test driver takes no backups: refused, back to the page.
    "instance-backup": [Case("POST", "instance", lambda role, which: replace(operate(P, 302)(role, which),
                                                                              effect=False),
                             body=lambda w, x: {"name": "nightly"})],
    "backup-change": [Case("POST", "backup", operate(P, 302), url_kwargs={"change": change},
                           body=lambda w, x: {"name": ""}) for change in ("restore", "delete")],
    "instance-snapshot": [Case("POST", "instance", operate(P, 302), body=lambda w, x: {"name": "matrix"})],
    "instance-snapshot-change": [
        Case("POST", "instance", operate(P, 302), url_kwargs={"change": change},
             body=lambda w, x: {"snapshot": w[x]["snapshot"].pk}) for change in ("revert", "delete")],
    "instance-nic": [
        Case("POST", "instance", operate(P, 302), url_kwargs={"change": "attach"},
             body=lambda w, x: {"network": w[x]["network"].pk}),
        Case("POST", "instance", operate(P, 302), url_kwargs={"change": "detach"},
             body=lambda w, x: {"port": w[x]["port"].pk}),
        # A NIC's groups change through the host's filter task, not an instance operation.
        Case("POST", "instance", lambda role, which: replace(operate(P, 302)(role, which), effect=False),
             url_kwargs={"change": "groups"},
             body=lambda w, x: {"port": w[x]["port"].pk, "security_groups": [w[x]["group"].pk]}),
    ],
    "action-list": [Case("GET", None, listing(P), marker="action")],
    # The world's instance runs on the test driver, which plugs no disk into a running guest: an attach or detach
    # is refused (409, or back to the page) for those who may ask.
    "instance-attach-volume": [Case("POST", "instance", lambda role, which: replace(operate(P, 302)(role, which),
                                                                                     effect=False),
                                    body=lambda w, x: {"volume": w[x]["volume"].pk})],
    "volume-list": [
        Case("GET", None, listing(P), marker="volume"),
        Case("POST", None, lambda role, which: (
            anon(P) if role == ANON else Cell(403) if role == VIEWER else Cell(302)), body=lambda w, x: {
                "name": "matrix", "size_gib": 1, "tenant": w[x]["tenant"].pk}),
    ],
    "volume-change": [
        Case("POST", "volume", operate(P, 302), url_kwargs={"change": "attach"},
             body=lambda w, x: {"instance": w[x]["instance"].pk}),
        Case("POST", "attached", operate(P, 302), url_kwargs={"change": "detach"}),
        Case("POST", "volume", operate(P, 302), url_kwargs={"change": "extend"}, body=lambda w, x: {"size_gib": 5}),
        Case("POST", "volume", operate(P, 302), url_kwargs={"change": "delete"}),
    ],
    "image-list": [Case("GET", None, listing(P), marker="image")],
    "image-upload": [Case("GET", None, adder_page)],
    # The page's import goes to the acting tenant whatever the body says (only admins choose).
    "image-import": [Case("GET", None, adder_page),
                     Case("POST", None, lambda role, which: (
                         anon(P) if role == ANON else Cell(403) if role == VIEWER else Cell(302)),
                          body=import_body)],
    "image-detail": [Case("GET", "image", read(P))],
    "image-delete": [Case("POST", "image", operate(P, 302))],
    "network-list": [
        Case("GET", None, listing(P), marker="network"),
        # A tenant's member adds to the tenant it acts in, whatever the body says (only admins choose).
        Case("POST", None, lambda role, which: (
            anon(P) if role == ANON else Cell(403) if role == VIEWER else Cell(302)), body=lambda w, x: {
                "name": "matrix", "kind": "nat", "cidr": "10.202.0.0/24", "tenant": w[x]["tenant"].pk}),
    ],
    "network-detail": [Case("GET", "network", read(P)),
                       Case("POST", "network", page_change, body=lambda w, x: {
                           "subnet": w[x]["subnet"].pk, "start": "10.200.0.200", "end": "10.200.0.210"})],
    "network-unreserve": [Case("POST", "network", operate(P, 302), url_objects={"range_pk": "reserved"})],
    "security-group-list": [
        Case("GET", None, listing(P), marker="group"),
        Case("POST", None, lambda role, which: (
            anon(P) if role == ANON else Cell(403) if role == VIEWER else Cell(302)), body=lambda w, x: {
                "name": "matrix", "tenant": w[x]["tenant"].pk}),
    ],
    "security-group-detail": [Case("GET", "group", read(P)),
                              Case("POST", "group", page_change, body=lambda w, x: {
                                  "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_min": 22})],
    "security-group-delete": [Case("POST", "group", operate(P, 302))],
    "security-rule-delete": [Case("POST", "group", operate(P, 302), url_objects={"rule_pk": "rule"})],
    "network-topology": [Case("GET", None, listing(P), marker="network")],
    "network-delete": [Case("POST", "network", operate(P, 302))],
    "template-list": [
        Case("GET", None, listing(P), marker="template"),
        # Another tenant's image is not among the form's choices: the form comes back with the error.
        Case("POST", None, lambda role, which: (
            anon(P) if role == ANON else Cell(403) if role == VIEWER else Cell(200) if which == OTHER
            and role != ADMIN else Cell(302)), body=lambda w, x: {
                "name": "matrix", "image": w[x]["disk"].pk, "vcpus": 1, "memory_mib": 64, "disk_gib": 1,
                "visibility": "private", "tenant": w[x]["tenant"].pk}),
    ],
    "template-delete": [Case("POST", "template", operate(P, 302))],
    "boot-kernel-list": [
        Case("GET", None, listing(P), marker="boot_kernel"),
        # Another tenant's kernel image is not among the form's choices: the form comes back with the error.
        Case("POST", None, lambda role, which: (
            anon(P) if role == ANON else Cell(403) if role == VIEWER else Cell(200) if which == OTHER
            and role != ADMIN else Cell(302)), body=lambda w, x: {
                "name": "matrix", "kernel": w[x]["boot_kernel"].kernel_id, "initrd": w[x]["boot_kernel"].initrd_id,
                "cmdline": "console=ttyS0", "visibility": "private", "tenant": w[x]["tenant"].pk}),
    ],
    "boot-kernel-delete": [Case("POST", "boot_kernel", operate(P, 302))],
    # Only platform admins copy to hosts; others are sent back with the refusal.
    "image-copy": [Case("POST", "image", lambda role, which: (
        anon(P) if role == ANON else Cell(404) if which == OTHER and role != ADMIN else Cell(302)),
        body=lambda w, x: {"host": w["host"].pk})],
    # Workers' transfers carry a signed token, not a session: a forged one is refused for everyone.
    "image-transfer": [Case("GET", None, anyone(403), url_kwargs={"token": "forged"})],
    "action-retry": [Case("POST", "action", operate(P, 302))],
    "tenant-list": [
        Case("GET", None, listing(P), marker="tenant"),
        Case("POST", None, admins_only_page, body=lambda w, x: {"name": f"t-{uuid.uuid4().hex[:8]}"}),
    ],
    "tenant-switch": [Case("POST", "tenant", signed_in(P, (302, "/")), body=lambda w, x: {
        "tenant": w[x]["tenant"].pk, "next": "/"})],
    "tenant-detail": [Case("GET", "tenant", read(P))],
    "tenant-quota": [Case("POST", "tenant", lambda role, which: (
        anon(P) if role == ANON else Cell(404) if which == OTHER and role != ADMIN
        else Cell(302) if role == ADMIN else Cell(403)), body=lambda w, x: {"instances": 5})],
    "member-add": [Case("POST", "tenant", manage(P, 302), body=lambda w, x: {"username": w["outsider"].username,
                                                                              "role": "viewer"})],
    "member-update": [Case("POST", "membership", manage(P, 302), body=lambda w, x: {"role": "member"})],
    "member-remove": [Case("POST", "membership", manage(P, 302))],
    "token-list": [
        Case("GET", None, listing(P, visible_own=(MEMBER, TADMIN, ADMIN)), marker="token"),
        # A token for another tenant: the form does not offer it (the page comes back with the error).
        Case("POST", None, create_in(P, 200, roles=(VIEWER, MEMBER, TADMIN), refused_own=200,
                                     refused_other=200),
             body=lambda w, x: {"name": "matrix", "tenant": w[x]["tenant"].pk, "expires_in_days": 5}),
    ],
    "token-revoke": [Case("POST", "token", lambda role, which: (
        Cell(302) if token_read(P)(role, which).status == 200 else token_read(P)(role, which)))],
    "audit-list": [Case("GET", None, listing(P, allowed=(TADMIN, ADMIN)), marker="audit")],
    "audit-export": [Case("GET", None, listing(P, allowed=(TADMIN, ADMIN)), marker="audit")],
    # The API's description is public; it holds no tenant's data.
    "api-docs": [Case("GET", None, anyone(200))],
    "schema": [Case("GET", None, anyone(200))],
    "api-root": [Case("GET", None, signed_in(A, 200))],
    "api-guests": [Case("GET", None, signed_in(A, 200))],
    "api-instance-metrics": [Case("GET", "instance", read(A))],
    "api-host-metrics": [Case("GET", "host", platform(A, 200))],
    "api-hot-spots": [Case("GET", None, signed_in(A, 200))],
    "api-notification-list": [Case("GET", None, listing(A), marker="notification")],
    "api-notification-detail": [Case("GET", "notification", read(A))],
    "api-notification-unread": [Case("GET", None, signed_in(A, 200))],
    "api-notification-read": [Case("POST", None, signed_in(A, 200))],
    "api-subscription-list": [
        Case("GET", None, listing(A, visible_own=(TADMIN, ADMIN)), marker="subscription"),
        Case("POST", None, lambda role, which: (
            anon(A) if role == ANON else Cell(201) if role == ADMIN or (role == TADMIN and which == OWN)
            else Cell(404) if which == OTHER else Cell(403)),
            body=lambda w, x: {"name": "matrix", "channel": "email", "email": "m@example.org",
                               "tenant": w[x]["tenant"].pk}),
    ],
    "api-subscription-detail": [Case("GET", "subscription", managed(A, 200)),
                                Case("PATCH", "subscription", managed(A, 200), body=lambda w, x: {"name": "x"}),
                                Case("DELETE", "subscription", managed(A, 204))],
    "api-subscription-deliveries": [Case("GET", "subscription", managed(A, 200))],
    "api-alert-rule-list": [
        Case("GET", None, listing(A), marker="alert_rule"),
        Case("POST", None, create_in(A, 201, roles=(TADMIN,), refused_own=403, refused_other=404),
             body=lambda w, x: {"name": "matrix", "tenant": w[x]["tenant"].pk, "measure": "cpu",
                                "threshold": 90, "seconds": 600}),
    ],
    "api-alert-rule-detail": [Case("GET", "alert_rule", read(A)),
                              Case("PATCH", "alert_rule", manage(A, 200), body=lambda w, x: {"enabled": False}),
                              Case("DELETE", "alert_rule", manage(A, 204))],
    "api-host-list": [Case("GET", None, platform(A, 200)),
                      Case("POST", None, platform(A, 201), body=lambda w, x: {
                          "name": "matrix-host", "uri": "test:///default?matrix"})],
    "api-host-detail": [Case("GET", "host", platform(A, 200)),
                        Case("PATCH", "host", platform(A, 200), body=lambda w, x: {"name": "renamed"}),
                        Case("DELETE", "host", platform(A, 409))],  # it still has instances
    "api-host-enable": [Case("POST", "host", platform(A, 200))],
    "api-host-disable": [Case("POST", "host", platform(A, 200))],
    "api-host-probe": [Case("POST", "host", platform(A, 202))],
    "api-host-domains": [Case("GET", "host", platform(A, 200))],
    "api-host-maintenance": [Case("GET", "host", platform(A, 200)),
                             Case("POST", "host", platform(A, 202), body=lambda w, x: {"enter": False})],
    "api-host-evacuation": [Case("GET", "host", platform(A, 409)),  # (an online host: 409 once allowed)
                            Case("POST", "host", platform(A, 409), body=lambda w, x: {"host_is_off": True})],
    "api-instance-adopt": [Case("POST", None, platform(A, 201), body=lambda w, x: {
        "domain": w["domain"].pk, "tenant": w[x]["tenant"].pk, "name": "adopted"})],
    "api-instance-list": [
        Case("GET", None, listing(A), marker="instance"),
        Case("POST", None, create_in(A, 202, roles=OPERATORS, refused_own=403, refused_other=404),
             body=instance_body),
        # Into one's own tenant, from the other tenant's image or template: no such image (for admins too).
        *[Case("POST", None, lambda role, which: (
            anon(A) if role == ANON else Cell(403) if role == VIEWER else Cell(404) if which == OTHER
            else Cell(202, effect=True)), body=lambda w, x, key=key, field=field: {
                "name": "matrix", field: w[x][key].pk, "boot_source": "image", "vcpus": 1, "memory_mib": 64,
                "tenant": w[OWN]["tenant"].pk}) for key, field in (("disk", "image"), ("template", "template"))],
        # ... and from the other tenant's boot kernel: no such boot kernel (for admins too).
        Case("POST", None, lambda role, which: (
            anon(A) if role == ANON else Cell(403) if role == VIEWER else Cell(404) if which == OTHER
            else Cell(202, effect=True)), body=lambda w, x: {
                "name": "matrix", "boot_kernel": w[x]["boot_kernel"].pk, "boot_source": "kernel", "vcpus": 1,
                "memory_mib": 64, "tenant": w[OWN]["tenant"].pk}),
        Case("POST", None, lambda role, which: (
            anon(A) if role == ANON else Cell(403) if role == VIEWER else Cell(404) if which == OTHER
            else Cell(202, effect=True)), body=lambda w, x: {
                "name": "matrix", "vcpus": 1, "memory_mib": 64, "boot_kernel": w["public_kernel"].pk,
                "tenant": w[OWN]["tenant"].pk,
                "networks": [{"network": w[x]["network"].pk}]}),
        # A NIC on one's own network in the other tenant's security group: no such group (for admins too).
        Case("POST", None, lambda role, which: (
            anon(A) if role == ANON else Cell(403) if role == VIEWER else Cell(404) if which == OTHER
            else Cell(202, effect=True)), body=lambda w, x: {
                "name": "matrix", "vcpus": 1, "memory_mib": 64, "boot_kernel": w["public_kernel"].pk,
                "tenant": w[OWN]["tenant"].pk,
                "networks": [{"network": w[OWN]["network"].pk, "security_groups": [w[x]["group"].pk]}]}),
    ],
    "api-instance-detail": [Case("GET", "instance", read(A)),
                            Case("DELETE", "instance", operate(A, 202))],
    "api-instance-history": [Case("GET", "instance", read(A))],
    "api-instance-attach-nic": [Case("POST", "instance", operate(A, 202),
                                     body=lambda w, x: {"network": w[x]["network"].pk})],
    "api-instance-detach-nic": [Case("POST", "instance", operate(A, 202), body=lambda w, x: {"port": w[x]["port"].pk})],
    "api-instance-media": [Case("POST", "instance", operate(A, 202), body=lambda w, x: {"image": w[x]["iso"].pk})],
    "api-instance-resize": [Case("POST", "instance", operate(A, 202), body=lambda w, x: {"disk_gib": 2})],
    "api-instance-rebuild": [Case("POST", "instance", operate(A, 409), body=lambda w, x: {"image": w[x]["disk"].pk})],
    "api-instance-rename": [Case("POST", "instance", operate(A, 202), body=lambda w, x: {"name": "renamed"})],
    "api-instance-clone": [Case("POST", "instance", operate(A, 409), body=lambda w, x: {"name": "twin"})],
    # The test driver cannot migrate, and nothing migrates to cancel: 409.
    "api-instance-migrate": [Case("POST", "instance", admin_operate(A, 409), body=lambda w, x: {})],
    "api-instance-migrate-cancel": [Case("POST", "instance", admin_operate(A, 409))],
    "api-instance-maintenance-policy": [Case("POST", "instance", operate(A, 200),
                                             body=lambda w, x: {"policy": "stop"})],
    "api-instance-save-image": [Case("POST", "instance", operate(A, 409), body=lambda w, x: {"name": "golden"})],
    "api-instance-snapshots": [Case("GET", "instance", read(A)),
                               Case("POST", "instance", operate(A, 202), body=lambda w, x: {"name": "matrix"})],
    "api-instance-revert-snapshot": [Case("POST", "instance", operate(A, 202),
                                          url_objects={"snapshot_id": "snapshot"})],
    "api-instance-delete-snapshot": [Case("DELETE", "instance", operate(A, 202),
                                          url_objects={"snapshot_id": "snapshot"})],
    # Tokens are no browser session: a display ticket is refused them with the reason (tests/test_display.py).
    "api-instance-display-ticket": [Case("POST", "instance", operate(A, 400))],
    **{f"api-instance-{op.value}": [Case("POST", "instance", operate(A, op_status(op.value)))]
       for op in Operation if op not in SPECIAL},
    "api-action-list": [Case("GET", None, listing(A), marker="action")],
    # The world's host is libvirt's test driver, which takes no backups: a backup or restore is a 409.
    "api-instance-backups": [Case("GET", "instance", read(A)), Case("POST", "instance", operate(A, 409))],
    "api-instance-backup-schedule": [Case("GET", "instance", read(A)),
                                     Case("PUT", "instance", operate(A, 200),
                                          body=lambda w, x: {"every_hours": 0, "keep": 3})],
    "api-backup-list": [Case("GET", None, listing(A), marker="backup")],
    "api-backup-detail": [Case("GET", "backup", read(A)), Case("DELETE", "backup", operate(A, 204))],
    "api-backup-restore": [Case("POST", "backup", operate(A, 409), body=lambda w, x: {"name": ""})],
    "api-volume-list": [
        Case("GET", None, listing(A), marker="volume"),
        Case("POST", None, create_in(A, 202, roles=OPERATORS, refused_own=403, refused_other=404),
             body=lambda w, x: {"name": "matrix", "size_gib": 1, "tenant": w[x]["tenant"].pk}),
    ],
    "api-volume-detail": [Case("GET", "volume", read(A)), Case("DELETE", "volume", operate(A, 202))],
    "api-volume-attach": [Case("POST", "volume", operate(A, 409), body=lambda w, x: {"instance": w[x]["instance"].pk})],
    "api-volume-detach": [Case("POST", "attached", operate(A, 409))],
    "api-volume-extend": [Case("POST", "volume", operate(A, 202), body=lambda w, x: {"size_gib": 5})],
    "api-image-list": [
        Case("GET", None, listing(A), marker="image"),
        Case("POST", None, create_in(A, 201, roles=OPERATORS, refused_own=403, refused_other=404),
             body=lambda w, x: {"name": "matrix", "size": 10, "tenant": w[x]["tenant"].pk}),
    ],
    "api-image-detail": [Case("GET", "image", read(A)), Case("DELETE", "image", operate(A, 204))],
    "api-template-list": [
        Case("GET", None, listing(A), marker="template"),
        Case("POST", None, create_in(A, 201, roles=OPERATORS, refused_own=403, refused_other=404),
             body=lambda w, x: {"name": "matrix", "image": w[x]["disk"].pk, "tenant": w[x]["tenant"].pk,
                                "disk_gib": 1}),
    ],
    "api-boot-kernel-list": [
        Case("GET", None, listing(A), marker="boot_kernel"),
        Case("POST", None, create_in(A, 201, roles=OPERATORS, refused_own=403, refused_other=404),
             body=lambda w, x: {"name": "matrix", "kernel": w[x]["boot_kernel"].kernel_id,
                                "initrd": w[x]["boot_kernel"].initrd_id, "tenant": w[x]["tenant"].pk}),
    ],
    "api-boot-kernel-detail": [Case("GET", "boot_kernel", read(A)), Case("DELETE", "boot_kernel", operate(A, 204))],
    "api-network-list": [
        Case("GET", None, listing(A), marker="network"),
        Case("POST", None, create_in(A, 201, roles=OPERATORS, refused_own=403, refused_other=404),
             body=lambda w, x: {"name": "matrix", "cidr": "10.201.0.0/24", "tenant": w[x]["tenant"].pk}),
    ],
    # The world's network has a NIC on it: in use, so a delete is a 409 for those who may try.
    "api-network-detail": [Case("GET", "network", read(A)), Case("DELETE", "network", operate(A, 409))],
    "api-subnet-list": [Case("GET", None, listing(A), marker="subnet")],
    "api-subnet-detail": [Case("GET", "subnet", read(A))],
    "api-subnet-reserve": [Case("POST", "subnet", operate(A, 201), body=lambda w, x: {
        "start": "10.200.0.200", "end": "10.200.0.210"})],
    "api-subnet-unreserve": [Case("DELETE", "subnet", operate(A, 204), url_objects={"range_id": "reserved"})],
    "api-port-list": [Case("GET", None, listing(A), marker="port")],
    "api-port-detail": [Case("GET", "port", read(A)),
                        Case("PATCH", "port", operate(A, 200), body=lambda w, x: {
                            "security_groups": [w[x]["group"].pk]})],
    "api-server-group-list": [
        Case("GET", None, listing(A), marker="server_group"),
        Case("POST", None, create_in(A, 201, roles=OPERATORS, refused_own=403, refused_other=404),
             body=lambda w, x: {"name": "matrix", "policy": "anti-affinity", "tenant": w[x]["tenant"].pk}),
    ],
    # The world's instance is in its server group: a delete is a 409 for those who may try.
    "api-server-group-detail": [Case("GET", "server_group", read(A)), Case("DELETE", "server_group", operate(A, 409))],
    "api-security-group-list": [
        Case("GET", None, listing(A), marker="group"),
        Case("POST", None, create_in(A, 201, roles=OPERATORS, refused_own=403, refused_other=404),
             body=lambda w, x: {"name": "matrix", "tenant": w[x]["tenant"].pk}),
    ],
    # The world's NIC is in its group: in use, so a delete is a 409 for those who may try.
    "api-security-group-detail": [Case("GET", "group", read(A)),
                                  Case("PATCH", "group", operate(A, 200), body=lambda w, x: {"name": "renamed"}),
                                  Case("DELETE", "group", operate(A, 409))],
    "api-security-rule-list": [
        Case("GET", None, listing(A), marker="rule"),
        Case("POST", None, lambda role, which: (
            anon(A) if role == ANON else Cell(404) if which == OTHER and role != ADMIN
            else Cell(403) if role == VIEWER else Cell(201)), body=lambda w, x: {
                "group": w[x]["group"].pk, "direction": "ingress", "protocol": "tcp", "port_min": 22}),
    ],
    "api-security-rule-detail": [Case("GET", "rule", read(A)), Case("DELETE", "rule", operate(A, 204))],
    "api-template-detail": [Case("GET", "template", read(A)),
                            Case("PATCH", "template", operate(A, 200), body=lambda w, x: {"vcpus": 2}),
                            Case("DELETE", "template", operate(A, 204))],
    "api-image-data": [Case("PUT", "image", operate(A, 200), body=lambda w, x: {"chunk": "of the upload"})],
    "api-action-detail": [Case("GET", "action", read(A))],
    "api-action-retry": [Case("POST", "action", operate(A, 202))],
    "api-tenant-list": [Case("GET", None, listing(A), marker="tenant"),
                        Case("POST", None, platform(A, 201), body=lambda w, x: {"name": "matrix-tenant"})],
    "api-tenant-detail": [Case("GET", "tenant", read(A))],
    "api-tenant-quota": [
        Case("GET", "tenant", read(A)),
        Case("PUT", "tenant", lambda role, which: (
            anon(A) if role == ANON else Cell(404) if which == OTHER and role != ADMIN
            else Cell(200) if role == ADMIN else Cell(403)), body=lambda w, x: {"instances": 5}),
    ],
    "api-member-list": [
        Case("GET", None, listing(A), marker="membership"),
        Case("POST", None, create_in(A, 201, roles=(TADMIN,), refused_own=403, refused_other=404),
             body=lambda w, x: {"tenant": w[x]["tenant"].pk, "username": w["outsider"].username}),
    ],
    "api-member-detail": [Case("GET", "membership", read(A)),
                          Case("PATCH", "membership", manage(A, 200), body=lambda w, x: {"role": "member"}),
                          Case("DELETE", "membership", manage(A, 204))],
    "api-token-list": [Case("GET", None, listing(A, visible_own=(MEMBER, TADMIN, ADMIN)), marker="token"),
                       # Tokens are made from a signed-in session, never with a token (tests/test_tenants.py).
                       Case("POST", None, signed_in(A, 403), body=lambda w, x: {"name": "matrix"})],
    "api-token-detail": [Case("GET", "token", token_read(A)),
                         Case("DELETE", "token", lambda role, which: (
                             Cell(204) if token_read(A)(role, which).status == 200 else token_read(A)(role, which)))],
    "api-audit-list": [Case("GET", None, listing(A, allowed=(TADMIN, ADMIN)), marker="audit")],
    "api-audit-detail": [Case("GET", "audit", audit_read(A))],
    "api-audit-export": [Case("GET", None, listing(A, allowed=(TADMIN, ADMIN)), marker="audit")],
    "billing-usage": [Case("GET", None, signed_in(P, 200))],
    "invoice-list": [Case("GET", None, listing(P), marker="invoice")],
    "invoice-run": [Case("POST", None, admins_only_page, body=lambda w, x: {"month": "2020-01"})],
    "invoice-archive": [Case("GET", None, platform(P, 200), url_kwargs={}, body=lambda w, x: {"month": "2027-03"})],
    "invoice-detail": [Case("GET", "invoice", read(P))],
    "invoice-export": [Case("GET", "invoice", read(P), url_kwargs={"kind": kind}) for kind in ("pdf", "csv", "json")],
    "invoice-change": [Case("POST", "invoice", admin_change(P, ok), url_kwargs={"change": change})
                       for change, ok in (("pay", 302), ("issue", 302))],
    "plan-list": [Case("GET", None, platform(P, 200)),
                  Case("POST", None, platform(P, 302), body=lambda w, x: {
                      "name": f"p-{uuid.uuid4().hex[:8]}", "currency": "EUR", "vcpu_hour": "0.01"})],
    "plan-detail": [Case("GET", "plan", platform(P, 200)),
                    Case("POST", "plan", platform(P, 302), body=lambda w, x: {"vcpu_hour": "0.02"})],
    "tenant-billing": [Case("POST", "tenant", admin_change(P, 302), body=lambda w, x: {
        "plan": w[x]["plan"].pk, "tax_rate": "0.1"})],
    "billing-revenue": [Case("GET", None, platform(P, 200))],
    "api-plan-list": [Case("GET", None, listing(A), marker="plan"),
                      Case("POST", None, platform(A, 201), body=lambda w, x: {
                          "name": f"p-{uuid.uuid4().hex[:8]}", "currency": "EUR", "vcpu_hour": "0.01"})],
    "api-plan-detail": [Case("GET", "plan", read(A))],
    "api-plan-prices": [Case("POST", "plan", admin_change(A, 201), body=lambda w, x: {"vcpu_hour": "0.02"})],
    "api-invoice-list": [Case("GET", None, listing(A), marker="invoice")],
    "api-invoice-detail": [Case("GET", "invoice", read(A))],
    "api-invoice-pdf": [Case("GET", "invoice", read(A))],
    "api-invoice-csv": [Case("GET", "invoice", read(A))],
    # The world's invoices are issued: issuing again is a conflict; paying, voiding and crediting go through.
    "api-invoice-issue": [Case("POST", "invoice", admin_change(A, 409))],
    "api-invoice-pay": [Case("POST", "invoice", admin_change(A, 200))],
    "api-invoice-void": [Case("POST", "invoice", admin_change(A, 200))],
    "api-invoice-credit": [Case("POST", "invoice", admin_change(A, 201))],
    "api-invoice-run": [Case("POST", None, platform(A, 201), body=lambda w, x: {"year": 2020, "month": 1})],
    "api-invoice-archive": [Case("GET", None, platform(A, 200), body=lambda w, x: {"month": "2027-03"})],
    # The month so far of the tenant acted for; an admin's token acts across tenants, so it must name one.
    "api-usage-list": [Case("GET", None, lambda role, which: (
        anon(A) if role == ANON else Cell(400) if role == ADMIN else Cell(200)))],
    "api-revenue-list": [Case("GET", None, platform(A, 200))],
    "api-tenant-billing": [Case("GET", "tenant", read(A)),
                           Case("PUT", "tenant", admin_change(A, 200), body=lambda w, x: {
                               "plan": w[x]["plan"].pk, "tax_rate": "0.1"})],
    # Django's admin site checks staff on every one of its views.
    "admin:index": [Case("GET", None, lambda role, which: Cell(200 if role == ADMIN else ADMIN_LOGIN))],
}

# Websocket routes: (kind of object in the path, expected close code or "open" per role and side).
WEBSOCKETS: dict[str, tuple[str | None, Callable[[str, str], int | str]]] = {
    "ws/status/": (None, lambda role, which: 4401 if role == ANON else "open"),
    "ws/instances/<int:instance_id>/status/": ("instance", lambda role, which: (
        4401 if role == ANON else 4404 if which == OTHER and role != ADMIN else "open")),
    "ws/instances/<int:instance_id>/console/": ("instance", lambda role, which: (
        4401 if role == ANON else 4404 if which == OTHER and role != ADMIN else 4403 if role == VIEWER
        else "open")),
    "ws/instances/<int:instance_id>/display/": ("instance", lambda role, which: (
        4401 if role == ANON else 4404 if which == OTHER and role != ADMIN else 4403 if role == VIEWER
        else 4419)),  # no ticket
}


def routes() -> dict[str, str]:
    """Every named route of the URL configuration (the API router included): name → pattern."""
    found: dict[str, str] = {}

    def walk(patterns, prefix="", namespace=None):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern):
                name = f"{namespace}:{pattern.name}" if namespace else pattern.name
                found.setdefault(name or prefix + str(pattern.pattern), prefix + str(pattern.pattern))

    walk(get_resolver().url_patterns)
    return found


def test_every_route_and_websocket_is_in_the_matrix():
    names = routes()
    missing = [n for n in names if n not in MATRIX and not n.startswith("admin:")]
    assert not missing, f"routes missing from the isolation matrix: {missing}"
    assert not [n for n in MATRIX if n not in names], "matrix entries for routes that no longer exist"
    ws = [str(p.pattern) for p in websocket_urlpatterns]
    assert sorted(ws) == sorted(WEBSOCKETS), f"websocket routes and the matrix differ: {ws}"


# --- the world -----------------------------------------------------------------------------


def build_world() -> dict:
    host = make_host()
    # A public boot kernel of the library, its files on the host: what the instance creates boot.
    world: dict = {"host": host, "outsider": make_user(), "public_kernel": make_boot_kernel(host),
                   "domain": HostDomain.objects.create(host=host, uuid=uuid.uuid4(), name="hand-made", state="running",
                                                       vcpus=1, memory_mib=64, seen_at=timezone.now())}
    for side in (OWN, OTHER):
        tag = uuid.uuid4().hex[:8]
        tenant = make_tenant(f"tenant-{side}-{tag}")
        users = {VIEWER: make_user(tenant=tenant, role=Role.VIEWER), MEMBER: make_user(tenant=tenant),
                 TADMIN: make_user(tenant=tenant, role=Role.ADMIN)}
        instance = make_instance(tenant=tenant, host=host, status=Status.RUNNING, name=f"inst-{side}-{tag}",
                                 cdrom_drive=True, disk_gib=1)
        action = InstanceAction.objects.create(instance=instance, operation=Operation.REBOOT,
                                               status=ActionStatus.FAILED, error="lost")
        token, key = create_api_token(user=users[MEMBER], name=f"tok-{side}-{tag}", tenant=tenant)
        event = AuditEvent.objects.create(tenant=tenant, tenant_name=tenant.name, channel="web",
                                          action=f"marker.{tag}", result="ok")
        image = Image.objects.create(name=f"img-{side}-{tag}", tenant=tenant, expected_bytes=1024)
        disk = Image.objects.create(name=f"disk-{side}-{tag}", tenant=tenant, status=ImageStatus.AVAILABLE,
                                    disk_format="qcow2", size=1 << 20, virtual_size=1 << 30, sha256="0" * 64)
        template = Template.objects.create(name=f"tpl-{side}-{tag}", tenant=tenant, image=disk, disk_gib=1)
        boot_kernel = make_boot_kernel(host, tenant=tenant)
        boot_kernel.name = f"bk-{side}-{tag}"
        boot_kernel.save(update_fields=["name"])
        iso = Image.objects.create(name=f"iso-{side}-{tag}", tenant=tenant, status=ImageStatus.AVAILABLE,
                                   disk_format="iso", size=1 << 20, virtual_size=1 << 20, sha256="0" * 64)
        network = create_network(user=None, tenant=tenant, name=f"net-{side}-{tag}", kind="nat",
                                 cidr="10.200.0.0/24")
        port = create_port(network=network)
        port.instance = instance
        port.save(update_fields=["instance"])
        snapshot = Snapshot.objects.create(instance=instance, name=f"snap-{side}-{tag}", macs=[port.mac],
                                           status=SnapshotStatus.AVAILABLE, taken_at=timezone.now(),
                                           vcpus=instance.vcpus, memory_mib=instance.memory_mib, disk_gib=1)
        volume = Volume.objects.create(name=f"vol-{side}-{tag}", tenant=tenant, host=host, pool=host.storage_pool,
                                       size_gib=1, status="available")
        plugged = make_instance(tenant=tenant, host=host, status=Status.RUNNING, name=f"plugged-{side}-{tag}")
        attached = Volume.objects.create(name=f"att-{side}-{tag}", tenant=tenant, host=host, pool=host.storage_pool,
                                         size_gib=1, status="available", instance=plugged, device="vdc")
        backup = Backup.objects.create(tenant=tenant, instance=instance, instance_name=instance.name,
                                       name=f"bk-{side}-{tag}", disk_gib=1, memory_mib=128, status="available",
                                       taken_at=timezone.now())
        subnet = network.subnets.get()
        reserved = reserve(subnet=subnet, first="10.200.0.250", last="10.200.0.251", reason=f"res-{side}-{tag}")
        group = create_group(user=None, tenant=tenant, name=f"sg-{side}-{tag}")
        server_group = ServerGroup.objects.create(tenant=tenant, name=f"srv-{side}-{tag}", policy="affinity")
        Instance.objects.filter(pk=instance.pk).update(server_group=server_group)
        rule = add_rule(group=group, direction="ingress", protocol="icmp", description=f"rule-{side}-{tag}")
        port.security_groups.add(group)
        plan = create_plan(name=f"plan-{side}-{tag}", currency="EUR", effective_from=datetime(2027, 1, 1, tzinfo=UTC),
                           vcpu_hour="0.01")
        set_tenant_billing(tenant=tenant, plan=plan, tax_rate="0.2", billed_from=datetime(2027, 1, 1, tzinfo=UTC))
        invoice = Invoice.objects.create(
            tenant=tenant, period_start=datetime(2027, 3, 1, tzinfo=UTC), period_end=datetime(2027, 4, 1, tzinfo=UTC),
            currency="EUR", plan_name=plan.name, tax_rate=Decimal("0.2"), subtotal=Decimal("1.00"),
            tax=Decimal("0.20"), total=Decimal("1.20"))
        InvoiceLine.objects.create(invoice=invoice, position=1, description="vm · vCPU-hours", quantity=100,
                                   unit="vCPU-hours", unit_price=Decimal("0.01"), amount=Decimal("1.00"))
        invoice = issue(invoice=invoice)
        TenantBilling.objects.filter(tenant=tenant).update(counted_end=invoice.period_end)
        notification = Notification.objects.get(tenant=tenant, kind="invoice.issued")  # (issuing told the tenant)
        subscription = Subscription.objects.create(tenant=tenant, name=f"sub-{side}-{tag}", channel="email",
                                                   email="ops@example.org")
        alert_rule = AlertRule.objects.create(tenant=tenant, name=f"alert-{side}-{tag}", measure="cpu", threshold=90,
                                              seconds=600)
        world[side] = {
            "tenant": tenant, "users": users, "instance": instance, "action": action, "token": token,
            "membership": Membership.objects.get(user=users[MEMBER], tenant=tenant), "audit": event,
            "image": image, "disk": disk, "template": template, "boot_kernel": boot_kernel, "iso": iso,
            "network": network, "port": port, "snapshot": snapshot, "volume": volume, "attached": attached,
            "backup": backup, "server_group": server_group,
            "subnet": subnet, "reserved": reserved, "group": group, "rule": rule, "plan": plan, "invoice": invoice,
            "notification": notification, "subscription": subscription, "alert_rule": alert_rule,
            "markers": {"instance": instance.name, "action": instance.name, "tenant": tenant.name,
                        "image": image.name, "template": template.name, "boot_kernel": boot_kernel.name,
                        "network": network.name, "volume": volume.name, "backup": backup.name,
                        "server_group": server_group.name,
                        "subnet": reserved.reason, "port": port.mac, "group": group.name, "rule": rule.description,
                        "plan": plan.name, "invoice": invoice.display_number,
                        "membership": users[MEMBER].username, "token": token.name, "audit": event.action,
                        "notification": notification.title, "subscription": subscription.name,
                        "alert_rule": alert_rule.name},
        }
    own = world[OWN]
    world["actors"] = {ANON: None, VIEWER: own["users"][VIEWER], MEMBER: own["users"][MEMBER],
                       TADMIN: own["users"][TADMIN], ADMIN: make_user(staff=True)}
    world["keys"] = {role: create_api_token(user=user, name="matrix", tenant=None if role == ADMIN else
                                            own["tenant"])[1] for role, user in world["actors"].items() if user}
    world["sessions"], world["clients"] = {}, {}
    for role, user in world["actors"].items():
        if user is not None:
            client = Client()
            client.force_login(user)
            world["sessions"][role] = client.cookies[settings.SESSION_COOKIE_NAME].value
    return world


def url_for(pattern: str, world: dict, case: Case, which: str) -> str:
    values = dict(case.url_kwargs)
    if case.kind is not None:
        obj = world[case.kind] if case.kind in PLATFORM_KINDS else world[which][case.kind]
        values.update({"pk": obj.pk, "instance_id": obj.pk})
    values.update({part: world[which][kind].pk for part, kind in case.url_objects.items()})
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values[m.group(1)]), "/" + pattern)  # router regexes
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), path)  # path() converters
    return path.replace("^", "").replace("$", "")


def client_for(role: str, world: dict, api: bool):
    """One client per role and kind (a new client costs a handler start-up), its cookies reset for each cell."""
    client = world["clients"].get((role, api))
    if client is None:
        client = world["clients"][(role, api)] = APIClient() if api else Client()
        if api and role != ANON:
            client.credentials(HTTP_AUTHORIZATION=f"Token {world['keys'][role]}")
    client.cookies.clear()
    if not api and role != ANON:
        client.cookies[settings.SESSION_COOKIE_NAME] = world["sessions"][role]
    return client


def outcome(response) -> tuple[int, str]:
    return response.status_code, response.get("Location", "")


def matches(expected, response) -> bool:
    if isinstance(expected, tuple):
        return response.status_code == expected[0] and response.get("Location", "").startswith(expected[1])
    return response.status_code == expected


def body_text(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


@pytest.mark.django_db
def test_isolation_matrix():
    world = build_world()
    names = routes()
    failures, cells = [], 0
    for name, cases in MATRIX.items():
        api = names[name].startswith("api/")
        for case in cases:
            sides = (OWN, OTHER) if case.kind not in (None, *PLATFORM_KINDS) or case.marker or case.body else (NONE,)
            for role in ROLES:
                for which in sides:
                    expected = case.expect(role, which)
                    url = url_for(names[name], world, case, which if which != NONE else OWN)
                    client = client_for(role, world, api)
                    data = case.body(world, which if which != NONE else OWN) if case.body else None
                    with transaction.atomic(), mock.patch("instances.tasks.enqueue") as enqueue, \
                            mock.patch("networks.security.sync_ports") as filters, \
                            mock.patch("hosts.hypervisor.connections.connection") as hypervisor:
                        kwargs = {"format": "json"} if api and data is not None else {}
                        response = getattr(client, case.method.lower())(url, data, **kwargs) if data is not None \
                            else getattr(client, case.method.lower())(url)
                        text = body_text(response) if expected.shows is not None else ""
                        transaction.set_rollback(True)
                    cells += 1
                    problems = []
                    if not matches(expected.status, response):
                        problems.append(f"got {outcome(response)}, expected {expected.status}")
                    if which == OTHER and role != ADMIN and (enqueue.called or filters.called or hypervisor.called):
                        problems.append("another tenant's request reached the task queue or the hypervisor")
                    if case.kind in ("instance", "action") and expected.effect != enqueue.called:
                        problems.append(f"queued work: {enqueue.called}, expected {expected.effect}")
                    if expected.shows is not None and response.status_code == 200:
                        marker = world[which if which != NONE else OWN]["markers"][case.marker]
                        if (marker in text) != expected.shows:
                            problems.append(f"{case.marker} marker shown: {marker in text}, expected {expected.shows}")
                    if problems:
                        failures.append(f"{case.method} {url} [{name}] as {role} on {which}: {'; '.join(problems)}")
    assert not failures, f"{len(failures)} of {cells} cells failed:\n" + "\n".join(failures)


@pytest.mark.django_db(transaction=True)
def test_websocket_isolation_matrix():
    world = build_world()
    failures = []

    @async_to_sync
    async def connect(path, user):
        communicator = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1:8000"),
                                                                            (b"host", b"127.0.0.1:8000")])
        if user is not None:
            communicator.scope["user"] = user
        with mock.patch("hosts.hypervisor.Console"):
            connected, code = await communicator.connect(timeout=5)
            if connected:
                await communicator.disconnect()
        return "open" if connected else code

    for pattern, (kind, expect) in WEBSOCKETS.items():
        for role in ROLES:
            for which in (OWN, OTHER) if kind else (NONE,):
                path = "/" + re.sub(r"<int:instance_id>", str(world[which]["instance"].pk) if kind else "", pattern)
                got = connect(path, world["actors"][role])
                if got != expect(role, which):
                    failures.append(f"{path} as {role} on {which}: got {got}, expected {expect(role, which)}")
    assert not failures, "\n".join(failures)


@pytest.mark.django_db
def test_filters_answer_the_same_for_another_tenants_id_as_for_no_such_id():
    world = build_world()
    other, missing = world[OTHER], 10**9
    other_user = other["users"][MEMBER]
    probes = [  # (role, api, url template, the other tenant's id)
        (MEMBER, True, "/api/v1/instances/?host={}", world["host"].pk + 10**6),
        (MEMBER, True, "/api/v1/instances/?tenant={}", other["tenant"].pk),
        (MEMBER, True, "/api/v1/actions/?instance={}", other["instance"].pk),
        (MEMBER, True, "/api/v1/actions/?user={}", other_user.pk),
        (MEMBER, True, "/api/v1/members/?tenant={}", other["tenant"].pk),
        (MEMBER, True, "/api/v1/images/?tenant={}", other["tenant"].pk),
        (MEMBER, True, "/api/v1/members/?role=member&user={}", other_user.pk),
        (TADMIN, True, "/api/v1/audit/?tenant={}", other["tenant"].pk),
        (MEMBER, False, "/instances/?tenant={}", other["tenant"].pk),
        (MEMBER, False, "/instances/?host={}", world["host"].pk + 10**6),
        (TADMIN, False, "/audit/?tenant={}", other["tenant"].pk),
    ]
    for role, api, template, foreign_id in probes:
        client = client_for(role, world, api)
        foreign, nothing = client.get(template.format(foreign_id)), client.get(template.format(missing))
        assert foreign.status_code == nothing.status_code, template
        if api and foreign.status_code == 200:
            assert foreign.json() == nothing.json(), template
        elif not api:
            assert foreign.context["page"].object_list == [] or list(foreign.context["page"].object_list) == list(
                nothing.context["page"].object_list), template
    # And the API answers JSON only: no browsable pages whose filter forms list other tenants' rows
    response = client_for(MEMBER, world, True).get("/api/v1/actions/", HTTP_ACCEPT="text/html")
    assert response["Content-Type"].startswith("application/json") or response.status_code == 406
