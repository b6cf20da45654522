"""Instance and action endpoints: thin viewsets over instances.services."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from cloudpanel.exceptions import DomainError, NotFound
from hosts.models import Host, HostDomain
from images.models import BootKernel, Image, Template
from instances import (
    backups,
    evacuation,
    groups,
    maintenance,
    migration,
    plans,
    rebuild,
    resizing,
    services,
    snapshots,
    tickets,
    volumes,
)
from instances.choices import Operation
from instances.filtersets import ActionFilterSet, BackupFilterSet, InstanceFilterSet, VolumeFilterSet
from instances.models import Backup, Instance, InstanceAction, ServerGroup, Volume
from instances.serializers import (
    ActionSerializer,
    AdoptSerializer,
    BackupRequestSerializer,
    BackupScheduleSerializer,
    BackupSerializer,
    DetachSerializer,
    DisplayTicketSerializer,
    EvacuationRequestSerializer,
    EvacuationStepSerializer,
    InstanceCreateSerializer,
    InstanceSerializer,
    MaintenancePolicySerializer,
    MaintenanceRequestSerializer,
    MaintenanceStepSerializer,
    MediaSerializer,
    MigrateSerializer,
    PlanSerializer,
    RebuildSerializer,
    RenameSerializer,
    ResizeSerializer,
    RestoreSerializer,
    SaveImageSerializer,
    ServerGroupSerializer,
    ServerGroupWriteSerializer,
    SnapshotRequestSerializer,
    SnapshotSerializer,
    StateChangeSerializer,
    VolumeAttachSerializer,
    VolumeCreateSerializer,
    VolumeExtendSerializer,
    VolumeSerializer,
    instance_rows,
    instance_values,
)
from networks.models import Network, SecurityGroup
from networks.serializers import NicRequestSerializer
from tenants import audit
from tenants.permissions import OPERATORS
from tenants.viewsets import ScopedViewSetMixin, resolve_tenant

DRY_RUN = OpenApiParameter("dry_run", bool, description="1: answer 200 with the plan of what the request would do "
                           "(host and why, definition, quota, price); nothing is created, changed or held.")


def dry_run(request) -> bool:
    """Whether the request asks for its plan only (?dry_run=1, or "dry_run": true in its body); 400 for a value
    that is not a yes or a no."""
    value = request.query_params.get("dry_run", "")
    if not value and isinstance(request.data, dict):
        value = request.data.get("dry_run", "")
    value = str(value).lower()
    if value not in ("", "0", "1", "true", "false"):
        raise ValidationError({"dry_run": ["Give 1 (only the plan) or 0."]})
    if value in ("1", "true"):
        audit.skip(request)  # a plan changes nothing (one refused is kept, as every refusal)
        return True
    return False


def plan_response(plan: plans.Plan, admin: bool) -> Response:
    return Response(PlanSerializer(plan.shown_to(admin)).data)


class InstanceViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Instances visible to the user; operations answer 202 with the queued action."""

    queryset = Instance.objects.none()  # the model, for the schema; requests use get_queryset()
    serializer_class = InstanceSerializer
    permission_classes = OPERATORS
    audit_name = "instance"
    filterset_class = InstanceFilterSet
    ordering_fields = ["name", "created_at", "status"]

    def get_queryset(self):
        queryset = Instance.objects.in_scope(self.scope)
        if self.action == "list":
            return queryset if "status" in self.request.query_params else queryset.live()
        return queryset.select_related("host", "tenant", "image", "boot_kernel").prefetch_related(
            "ports__network", "ports__addresses", "ports__security_groups")

    def list(self, request, *args, **kwargs):
        """A page of instances, written from rows (instance_rows), not model objects."""
        page = self.paginate_queryset(instance_values(self.filter_queryset(self.get_queryset())))
        return self.get_paginated_response(instance_rows(page, self.scope.admin))

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "scope": self.scope}

    def _operate(self, request, operation: str) -> Response:
        instance = self.get_object()
        act = services.request_operation(instance=instance, operation=operation, user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=InstanceCreateSerializer, responses={202: ActionSerializer, 200: PlanSerializer},
                   parameters=[DRY_RUN])
    def create(self, request):
        # Before validation, which would say whether the host id exists.
        if hasattr(request.data, "get") and request.data.get("host") not in (None, "") and not self.scope.admin:
            raise ValidationError({"host": ["Only platform admins choose a host; leave it out for placement."]})
        data = InstanceCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        tenant = resolve_tenant(self.scope, values.pop("tenant", None))
        audit.note(request, tenant=tenant)
        # Another tenant's image, template or network reads as no such thing.
        values["init_env"] = values.pop("env", {})
        self._from_library(values)
        values["nics"] = [self._nic(wanted, tenant.pk) for wanted in values.pop("networks", [])]
        if dry_run(request):
            plan = plans.for_create(lambda: services.create_instance(user=request.user, tenant=tenant, **values),
                                    tenant.pk)
            return plan_response(plan, self.scope.admin)
        act = services.create_instance(user=request.user, tenant=tenant, **values)
        audit.note(request, target=act.instance)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    def _from_library(self, values: dict) -> None:
        """Replace the ids of library objects in values by the objects: another tenant's is no such thing (404)."""
        for key, model in (("image", Image), ("template", Template), ("boot_kernel", BootKernel)):
            if values.get(key) is not None:
                values[key] = model.objects.visible_to(self.scope).filter(pk=values[key]).first()
                if values[key] is None:
                    raise NotFound(f"No such {key.replace('_', ' ')}.")
        if values.get("volume") is not None:
            values["volume"] = Volume.objects.in_scope(self.scope).live().filter(pk=values["volume"]).first()
            if values["volume"] is None:
                raise NotFound("No such volume.")
        if values.get("server_group") is not None:
            values["server_group"] = ServerGroup.objects.in_scope(self.scope).filter(pk=values["server_group"]).first()
            if values["server_group"] is None:
                raise NotFound("No such server group.")

    def _nic(self, wanted: dict, tenant_id: int) -> services.NicRequest:
        """A NIC asked for in a body: another tenant's network or security group reads as no such thing."""
        network = Network.objects.visible_to(self.scope).filter(pk=wanted["network"]).first()
        if network is None:
            raise NotFound("No such network.")
        ids = set(wanted.get("security_groups") or ())
        groups = list(SecurityGroup.objects.in_scope(self.scope).filter(pk__in=ids, tenant_id=tenant_id))
        if len(groups) != len(ids):
            raise NotFound("No such security group.")
        return services.NicRequest(network, wanted["address"], groups)

    @extend_schema(request=AdoptSerializer, responses={201: InstanceSerializer},
                   summary="Adopt a domain made outside the panel into a tenant (platform admins)")
    @action(detail=False, methods=["post"])
    def adopt(self, request):
        if not self.scope.admin:
            raise PermissionDenied("Only platform admins adopt domains.")
        data = AdoptSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        domain = HostDomain.objects.select_related("host").filter(pk=data.validated_data["domain"]).first()
        if domain is None:
            raise NotFound("No such domain.")
        tenant = resolve_tenant(self.scope, data.validated_data["tenant"])
        audit.note(request, tenant=tenant)
        instance = services.adopt_domain(domain=domain, tenant=tenant, name=data.validated_data["name"],
                                         user=request.user)
        audit.note(request, target=instance)
        return Response(InstanceSerializer(instance, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={202: ActionSerializer})
    def destroy(self, request, pk=None):
        return self._operate(request, Operation.DELETE)

    @extend_schema(request=None, responses={201: DisplayTicketSerializer},
                   summary="A single-use ticket to the graphical console (VNC) for this browser session")
    @action(detail=True, methods=["post"], url_path="display-ticket", url_name="display-ticket")
    def display_ticket(self, request, pk=None):
        instance = self.get_object()
        session_key = request.session.session_key if request.auth is None else None
        if not session_key:
            raise DomainError("A display ticket belongs to a signed-in browser session: sign in to the panel; an "
                              "API token cannot open the display.")
        tickets.check_display(instance)
        raw, expires_at = tickets.issue(instance=instance, user=request.user, session_key=session_key)
        data = {"ticket": raw, "expires_at": expires_at,
                "url": f"/ws/instances/{instance.pk}/display/?ticket={raw}"}
        return Response(DisplayTicketSerializer(data).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ResizeSerializer, responses={202: ActionSerializer, 200: PlanSerializer},
                   parameters=[DRY_RUN],
                   summary="Resize: vCPUs and RAM while stopped, the disk grown whether it runs or not")
    @action(detail=True, methods=["post"])
    def resize(self, request, pk=None):
        instance = self.get_object()
        data = ResizeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if dry_run(request):
            plan = plans.for_resize(instance, lambda: resizing.resize(instance=instance, user=request.user,
                                                                      **data.validated_data))
            return plan_response(plan, self.scope.admin)
        act = resizing.resize(instance=instance, user=request.user, **data.validated_data)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=SaveImageSerializer, responses={202: ActionSerializer},
                   summary="Save the stopped instance's disk as a new private image (the action's image)")
    @action(detail=True, methods=["post"], url_path="save-image", url_name="save-image")
    def save_image(self, request, pk=None):
        instance = self.get_object()
        data = SaveImageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        act = rebuild.save_as_image(instance=instance, name=data.validated_data["name"], user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=RenameSerializer, responses={202: ActionSerializer},
                   summary="Clone the stopped instance: a new one (the action's instance) with a copy of its disk")
    @action(detail=True, methods=["post"], url_path="clone", url_name="clone")
    def clone_instance(self, request, pk=None):
        instance = self.get_object()
        data = RenameSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        act = rebuild.clone(instance=instance, name=data.validated_data["name"], user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=MigrateSerializer, responses={202: ActionSerializer, 200: PlanSerializer},
                   parameters=[DRY_RUN],
                   summary="Migrate the instance to another host: live if it runs, cold if stopped (platform admins)")
    @action(detail=True, methods=["post"], url_path="migrate", url_name="migrate")
    def migrate_instance(self, request, pk=None):
        instance = self.get_object()
        if not self.scope.admin:
            raise PermissionDenied("Only platform admins migrate instances.")
        data = MigrateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        host = None
        if data.validated_data.get("host") is not None:
            host = Host.objects.filter(pk=data.validated_data["host"]).first()
            if host is None:
                raise NotFound("No such host.")
        if dry_run(request):
            plan = plans.for_migration(instance, lambda: migration.migrate(instance=instance, host=host,
                                                                           user=request.user))
            return plan_response(plan, self.scope.admin)
        act = migration.migrate(instance=instance, host=host, user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: ActionSerializer},
                   summary="Cancel the migration in progress: the instance stays on its host (platform admins)")
    @action(detail=True, methods=["post"], url_path="migrate/cancel", url_name="migrate-cancel")
    def cancel_migration(self, request, pk=None):
        instance = self.get_object()
        if not self.scope.admin:
            raise PermissionDenied("Only platform admins migrate instances.")
        return Response(ActionSerializer(migration.cancel(instance=instance)).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=MaintenancePolicySerializer, responses={200: InstanceSerializer},
                   summary="What becomes of the instance when its host goes into maintenance: migrate or stop")
    @action(detail=True, methods=["post"], url_path="maintenance-policy", url_name="maintenance-policy")
    def maintenance_policy(self, request, pk=None):
        instance = self.get_object()
        data = MaintenancePolicySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        maintenance.set_policy(instance=instance, policy=data.validated_data["policy"])
        return Response(InstanceSerializer(instance, context=self.get_serializer_context()).data)

    @extend_schema(request=RenameSerializer, responses={202: ActionSerializer}, summary="Rename the instance")
    @action(detail=True, methods=["post"], url_path="rename", url_name="rename")
    def rename_instance(self, request, pk=None):
        instance = self.get_object()
        data = RenameSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        act = rebuild.rename(instance=instance, name=data.validated_data["name"], user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=RebuildSerializer, responses={202: ActionSerializer},
                   summary="Reinstall from an image or template, keeping the name, NICs and addresses")
    @action(detail=True, methods=["post"], url_path="rebuild", url_name="rebuild")
    def rebuild_instance(self, request, pk=None):
        instance = self.get_object()
        data = RebuildSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        wanted = dict(data.validated_data)
        self._from_library(wanted)
        act = rebuild.rebuild(instance=instance, user=request.user, **wanted)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(methods=["GET"], request=None, responses={200: SnapshotSerializer(many=True)},
                   summary="The instance's snapshots")
    @extend_schema(methods=["POST"], request=SnapshotRequestSerializer, responses={202: ActionSerializer},
                   summary="Take a snapshot (with the memory while it runs, of the disks alone when stopped)")
    @action(detail=True, methods=["get", "post"], url_path="snapshots", url_name="snapshots")
    def snapshot_list(self, request, pk=None):
        instance = self.get_object()
        if request.method == "GET":
            return Response(SnapshotSerializer(instance.snapshots.live(), many=True).data)
        data = SnapshotRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        act = snapshots.take(instance=instance, user=request.user, **data.validated_data)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    def _snapshot(self, instance: Instance, snapshot_id: str):
        snapshot = instance.snapshots.live().filter(pk=int(snapshot_id)).first()
        if snapshot is None:
            raise NotFound("No such snapshot of this instance.")
        return snapshot

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Revert to a snapshot")
    @action(detail=True, methods=["post"], url_path=r"snapshots/(?P<snapshot_id>[0-9]{1,18})/revert",
            url_name="revert-snapshot")
    def revert_snapshot(self, request, pk=None, snapshot_id=None):
        instance = self.get_object()
        act = snapshots.revert(instance=instance, snapshot=self._snapshot(instance, snapshot_id), user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Delete a snapshot")
    @action(detail=True, methods=["delete"], url_path=r"snapshots/(?P<snapshot_id>[0-9]{1,18})",
            url_name="delete-snapshot")
    def delete_snapshot(self, request, pk=None, snapshot_id=None):
        instance = self.get_object()
        act = snapshots.delete(instance=instance, snapshot=self._snapshot(instance, snapshot_id), user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(methods=["GET"], request=None, responses={200: BackupSerializer(many=True)},
                   summary="The instance's backups")
    @extend_schema(methods=["POST"], request=BackupRequestSerializer, responses={202: ActionSerializer},
                   summary="Back up its disk now (incremental while it runs, after a full one)")
    @action(detail=True, methods=["get", "post"], url_path="backups", url_name="backups")
    def backup_list(self, request, pk=None):
        instance = self.get_object()
        if request.method == "GET":
            return Response(BackupSerializer(instance.backups.live(), many=True).data)
        data = BackupRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        act = backups.take(instance=instance, user=request.user, name=data.validated_data["name"])
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(methods=["PUT"], request=BackupScheduleSerializer, responses={200: BackupScheduleSerializer},
                   summary="Back it up every so many hours, keeping the newest few")
    @extend_schema(methods=["GET"], request=None, responses={200: BackupScheduleSerializer})
    @action(detail=True, methods=["get", "put"], url_path="backup-schedule", url_name="backup-schedule")
    def backup_schedule(self, request, pk=None):
        instance = self.get_object()
        if request.method == "PUT":
            data = BackupScheduleSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            instance = backups.set_schedule(instance=instance, every_hours=data.validated_data["every_hours"],
                                            keep=data.validated_data["keep"])
        return Response({"every_hours": instance.backup_every_hours, "keep": instance.backup_keep,
                         "next_at": instance.backup_next_at})

    @extend_schema(request=MediaSerializer, responses={202: ActionSerializer}, summary="Insert or eject a CD-ROM")
    @action(detail=True, methods=["post"])
    def media(self, request, pk=None):
        instance = self.get_object()
        data = MediaSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = None
        if data.validated_data.get("image") is not None:
            image = Image.objects.visible_to(self.scope).filter(pk=data.validated_data["image"]).first()
            if image is None:
                raise NotFound("No such image.")
        act = services.change_media(instance=instance, image=image, user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=NicRequestSerializer, responses={202: ActionSerializer}, summary="Plug in a NIC")
    @action(detail=True, methods=["post"], url_path="attach-nic", url_name="attach-nic")
    def attach_nic(self, request, pk=None):
        instance = self.get_object()
        data = NicRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        nic = self._nic(data.validated_data, instance.tenant_id)
        act = services.attach_nic(instance=instance, network=nic.network, address=nic.address,
                                  security_groups=nic.security_groups, user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=DetachSerializer, responses={202: ActionSerializer}, summary="Unplug a NIC")
    @action(detail=True, methods=["post"], url_path="detach-nic", url_name="detach-nic")
    def detach_nic(self, request, pk=None):
        instance = self.get_object()
        data = DetachSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        port = instance.ports.filter(pk=data.validated_data["port"]).first()
        if port is None:
            raise NotFound("No such NIC on this instance.")
        act = services.detach_nic(instance=instance, port=port, user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Start the instance")
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._operate(request, Operation.START)

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Shut the instance down (ACPI)")
    @action(detail=True, methods=["post"])
    def shutdown(self, request, pk=None):
        return self._operate(request, Operation.SHUTDOWN)

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Force the instance off")
    @action(detail=True, methods=["post"])
    def poweroff(self, request, pk=None):
        return self._operate(request, Operation.POWEROFF)

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Reset the instance")
    @action(detail=True, methods=["post"])
    def reboot(self, request, pk=None):
        return self._operate(request, Operation.REBOOT)

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Pause the instance")
    @action(detail=True, methods=["post"])
    def suspend(self, request, pk=None):
        return self._operate(request, Operation.SUSPEND)

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Resume the paused instance")
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._operate(request, Operation.RESUME)

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Delete the instance")
    @action(detail=True, methods=["post"], url_path="delete", url_name="delete", audit_verb="delete")
    def delete_instance(self, request, pk=None):
        return self._operate(request, Operation.DELETE)

    @extend_schema(responses={200: StateChangeSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def history(self, request, pk=None):
        instance = self.get_object()
        return Response(StateChangeSerializer(instance.state_changes.all(), many=True).data)


class ActionViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Every requested operation, newest first; a failed one can be retried."""

    queryset = InstanceAction.objects.none()
    serializer_class = ActionSerializer
    permission_classes = OPERATORS
    audit_name = "action"
    filterset_class = ActionFilterSet

    def get_queryset(self):
        return InstanceAction.objects.in_scope(self.scope).select_related("user", "instance")

    def owner_of(self, obj: InstanceAction) -> int:
        return obj.instance.tenant_id

    def audit_target(self, obj: InstanceAction) -> Instance:
        return obj.instance

    @extend_schema(request=None, responses={202: ActionSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        act = self.get_object()
        new = services.retry_action(action=act, user=request.user)
        return Response(ActionSerializer(new).data, status=status.HTTP_202_ACCEPTED)


class VolumeViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Volumes with their attachments. A create, extend or delete answers 202 with the volume (its task_state says
    what is in flight); an attach or detach with its instance's action."""

    queryset = Volume.objects.none()
    serializer_class = VolumeSerializer
    permission_classes = OPERATORS
    audit_name = "volume"
    filterset_class = VolumeFilterSet
    ordering_fields = ["name", "created_at", "size_gib"]

    def get_queryset(self):
        queryset = Volume.objects.in_scope(self.scope).select_related("host", "instance", "tenant")
        if self.action == "list" and "status" not in self.request.query_params:
            return queryset.live()
        return queryset

    def _accepted(self, volume: Volume) -> Response:
        return Response(VolumeSerializer(self.get_queryset().get(pk=volume.pk)).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=VolumeCreateSerializer, responses={202: VolumeSerializer})
    def create(self, request):
        if hasattr(request.data, "get") and request.data.get("host") not in (None, "") and not self.scope.admin:
            raise ValidationError({"host": ["Only platform admins choose a host; leave it out for placement."]})
        data = VolumeCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        tenant = resolve_tenant(self.scope, values.pop("tenant", None))
        audit.note(request, tenant=tenant)
        if values.get("image") is not None:
            values["image"] = Image.objects.visible_to(self.scope).filter(pk=values["image"]).first()
            if values["image"] is None:
                raise NotFound("No such image.")
        if values.get("instance") is not None:
            values["instance"] = Instance.objects.in_scope(self.scope).filter(pk=values["instance"],
                                                                              tenant=tenant).first()
            if values["instance"] is None:
                raise NotFound("No such instance.")
        volume = volumes.create(user=request.user, tenant=tenant, **values)
        audit.note(request, target=volume)
        return self._accepted(volume)

    @extend_schema(request=None, responses={202: VolumeSerializer}, summary="Delete a detached volume")
    def destroy(self, request, pk=None):
        volume = self.get_object()
        volumes.delete(volume=volume, user=request.user)
        return self._accepted(volume)

    @extend_schema(request=VolumeExtendSerializer, responses={202: VolumeSerializer},
                   summary="Grow the volume (online while its instance runs)")
    @action(detail=True, methods=["post"])
    def extend(self, request, pk=None):
        volume = self.get_object()
        data = VolumeExtendSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        volumes.extend(volume=volume, size_gib=data.validated_data["size_gib"], user=request.user)
        return self._accepted(volume)

    @extend_schema(request=VolumeAttachSerializer, responses={202: ActionSerializer},
                   summary="Attach to an instance of its host (hot-plugged while it runs)")
    @action(detail=True, methods=["post"])
    def attach(self, request, pk=None):
        volume = self.get_object()
        data = VolumeAttachSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        instance = Instance.objects.in_scope(self.scope).select_related("host").filter(
            pk=data.validated_data["instance"]).first()
        if instance is None:
            raise NotFound("No such instance.")
        act = volumes.attach(volume=volume, instance=instance, user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: ActionSerializer}, summary="Detach from its instance")
    @action(detail=True, methods=["post"])
    def detach(self, request, pk=None):
        act = volumes.detach(volume=self.get_object(), user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)


class BackupViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Backups of the tenant's instances (those of deleted instances too, to restore into new ones)."""

    queryset = Backup.objects.none()
    serializer_class = BackupSerializer
    permission_classes = OPERATORS
    audit_name = "backup"
    filterset_class = BackupFilterSet
    ordering_fields = ["created_at", "taken_at"]

    def get_queryset(self):
        queryset = Backup.objects.in_scope(self.scope).select_related("instance__host", "tenant")
        return queryset if self.action != "list" or "status" in self.request.query_params else queryset.live()

    @extend_schema(request=None, responses={204: None}, summary="Delete a backup from the store")
    def destroy(self, request, pk=None):
        backups.delete(backup=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=RestoreSerializer, responses={202: ActionSerializer},
                   summary="Restore: over its (stopped) instance, or into a new instance of the given name")
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        backup = self.get_object()
        data = RestoreSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["name"]:
            act = backups.restore_new(backup=backup, name=data.validated_data["name"], user=request.user)
        else:
            act = backups.restore_over(backup=backup, user=request.user)
        return Response(ActionSerializer(act).data, status=status.HTTP_202_ACCEPTED)


class HostMaintenanceView(APIView):
    """A host's maintenance (platform admins): GET the plan, POST {"enter": true} to enter it (each instance leaves
    by its policy; the answer says what was asked for each) or {"enter": false} to leave it."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: MaintenanceStepSerializer(many=True)},
                   summary="What entering maintenance would do to each instance of the host")
    def get(self, request, pk: int):
        host = get_object_or_404(Host, pk=pk)
        return Response(MaintenanceStepSerializer(maintenance.plan(host), many=True).data)

    @extend_schema(request=MaintenanceRequestSerializer, responses={202: MaintenanceStepSerializer(many=True),
                                                                    200: MaintenanceStepSerializer(many=True)},
                   parameters=[DRY_RUN], summary="Enter maintenance (its instances leave it) or leave it")
    def post(self, request, pk: int):
        host = get_object_or_404(Host, pk=pk)
        audit.note(request, action="host.maintenance", target=host, platform=True)
        data = MaintenanceRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if dry_run(request):  # the plan of entering it (leaving it changes nothing but the flag)
            return Response(MaintenanceStepSerializer(maintenance.plan(host) if data.validated_data["enter"] else [],
                                                      many=True).data)
        if not data.validated_data["enter"]:
            maintenance.leave(host=host)
            return Response([], status=status.HTTP_202_ACCEPTED)
        steps = maintenance.enter(host=host, user=request.user)
        return Response(MaintenanceStepSerializer(steps, many=True).data, status=status.HTTP_202_ACCEPTED)


class HostEvacuationView(APIView):
    """A host that is down (platform admins): GET the plan for its instances, POST {"host_is_off": true} to rebuild
    each one that can be on another host (?dry_run=1: the plan)."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: EvacuationStepSerializer(many=True)},
                   summary="What evacuating the host would do to each of its instances")
    def get(self, request, pk: int):
        host = get_object_or_404(Host, pk=pk)
        return Response(EvacuationStepSerializer(evacuation.plan(host), many=True).data)

    @extend_schema(request=EvacuationRequestSerializer, responses={202: EvacuationStepSerializer(many=True),
                                                                   200: EvacuationStepSerializer(many=True)},
                   parameters=[DRY_RUN], summary="Evacuate a host that is down: its instances rebuilt elsewhere")
    def post(self, request, pk: int):
        host = get_object_or_404(Host, pk=pk)
        audit.note(request, action="host.evacuate", target=host, platform=True)
        data = EvacuationRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if dry_run(request):
            return Response(EvacuationStepSerializer(evacuation.plan(host), many=True).data)
        steps = evacuation.evacuate(host=host, user=request.user, host_is_off=data.validated_data["host_is_off"])
        return Response(EvacuationStepSerializer(steps, many=True).data, status=status.HTTP_202_ACCEPTED)


class ServerGroupViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                         viewsets.GenericViewSet):
    """Server groups: instances placed together on one host (affinity) or each on another (anti-affinity)."""

    queryset = ServerGroup.objects.none()
    serializer_class = ServerGroupSerializer
    permission_classes = OPERATORS
    audit_name = "server_group"
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return ServerGroup.objects.in_scope(self.scope).select_related("tenant")

    @extend_schema(request=ServerGroupWriteSerializer, responses={201: ServerGroupSerializer})
    def create(self, request):
        data = ServerGroupWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = resolve_tenant(self.scope, data.validated_data.get("tenant"))
        audit.note(request, tenant=tenant)
        group = groups.create(tenant=tenant, name=data.validated_data["name"], policy=data.validated_data["policy"],
                              user=request.user)
        audit.note(request, target=group)
        return Response(ServerGroupSerializer(self.get_queryset().get(pk=group.pk)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        groups.delete(group=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
