"""Notifications and subscriptions over the API, scoped like the pages."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from notifications import services
from notifications.models import Notification, Subscription
from notifications.serializers import (
    DeliverySerializer,
    NotificationSerializer,
    SubscriptionSerializer,
    SubscriptionWriteSerializer,
    UnreadSerializer,
)
from tenants.viewsets import ScopedViewSetMixin, tenant_asked

MANAGERS = "Only platform admins and the tenant's admins manage its subscriptions."


class NotificationViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                          viewsets.GenericViewSet):
    """What happened in the tenants in scope (and, for platform admins, on the platform), newest first."""

    queryset = Notification.objects.none()
    serializer_class = NotificationSerializer
    audit_name = "notification"

    def get_queryset(self):
        return Notification.objects.in_scope(self.scope).select_related("tenant")

    @extend_schema(responses={200: UnreadSerializer}, summary="How many notifications are unread")
    @action(detail=False, methods=["get"])
    def unread(self, request):
        until = services.read_until(request.user)
        return Response({"count": services.unread_count(self.scope), "read_until": until})

    @extend_schema(request=None, responses={200: UnreadSerializer}, summary="Mark every notification read")
    @action(detail=False, methods=["post"])
    def read(self, request):
        services.mark_read(user=request.user)
        return Response({"count": 0, "read_until": services.read_until(request.user)})


class SubscriptionViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                          mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Who hears of events, by e-mail or webhook: a tenant's admins for that tenant, platform admins for the
    platform (host events and every tenant's)."""

    queryset = Subscription.objects.none()
    serializer_class = SubscriptionSerializer
    audit_name = "subscription"

    def get_queryset(self):
        return Subscription.objects.managed_by(self.scope)

    def _tenant(self, tenant_id: int | None):
        tenant = tenant_asked(self.scope, tenant_id)
        if not self.scope.manages(tenant.pk if tenant else None):
            raise PermissionDenied(MANAGERS)
        return tenant

    @extend_schema(request=SubscriptionWriteSerializer, responses={201: SubscriptionSerializer})
    def create(self, request):
        data = SubscriptionWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        tenant = self._tenant(values.pop("tenant", None))
        subscription = services.create_subscription(user=request.user, tenant=tenant, **values)
        return Response(SubscriptionSerializer(subscription).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=SubscriptionWriteSerializer, responses={200: SubscriptionSerializer})
    def partial_update(self, request, pk=None):
        subscription = self.get_object()
        current = {"name": subscription.name, "channel": subscription.channel, "kinds": subscription.kinds,
                   "email": subscription.email, "url": subscription.url, "enabled": subscription.enabled}
        data = SubscriptionWriteSerializer(data={**current, **request.data})
        data.is_valid(raise_exception=True)
        values = {k: v for k, v in data.validated_data.items() if k in ("name", "kinds", "email", "url", "enabled")}
        subscription = services.update_subscription(subscription=subscription, **values)
        return Response(SubscriptionSerializer(subscription).data)

    @extend_schema(responses={200: DeliverySerializer(many=True)}, summary="The subscription's delivery log")
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        page = self.paginate_queryset(self.get_object().deliveries.select_related("notification"))
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)
