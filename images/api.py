"""Image endpoints: create an upload or an import, send an upload's bytes (resumable), delete."""

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from cloudpanel.exceptions import NotFound
from cloudpanel.scoping import Scope
from images import services
from images.filtersets import ImageFilterSet
from images.models import BootKernel, Image, Template
from images.serializers import (
    BootKernelCreateSerializer,
    BootKernelSerializer,
    ImageCreateSerializer,
    ImageSerializer,
    TemplateCreateSerializer,
    TemplateSerializer,
)
from tenants import audit
from tenants.models import Tenant
from tenants.permissions import OPERATORS
from tenants.viewsets import ScopedViewSetMixin, tenant_asked

_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def parse_range(header: str, length: int) -> tuple[int, int | None]:
    """(start, total) of a chunk from its Content-Range; no header: the whole file in one request."""
    if not header:
        return 0, None
    match = _RANGE.match(header.strip())
    if not match:
        raise ValidationError({"detail": "Content-Range must read 'bytes START-END/TOTAL'."})
    start, end = int(match[1]), int(match[2])
    if end - start + 1 != length:
        raise ValidationError({"detail": f"Content-Range covers {end - start + 1} bytes but {length} were sent."})
    return start, None if match[3] == "*" else int(match[3])


def _owner(request, scope: Scope, values: dict) -> Tenant | None:
    """Whose a new image, template or boot kernel is (the body's tenant and visibility), noted for the audit."""
    owner = services.owner_for(scope, visibility=values["visibility"],
                               tenant=tenant_asked(scope, values.pop("tenant", None)))
    audit.note(request, tenant=owner)
    return owner


class ImageViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Public images and the tenant's own. An upload is created with its size, then its bytes are PUT
    to /data/ in one request or in chunks with Content-Range; GET the image to learn where to resume."""

    queryset = Image.objects.none()
    serializer_class = ImageSerializer
    permission_classes = OPERATORS
    audit_name = "image"
    filterset_class = ImageFilterSet
    ordering_fields = ["name", "created_at", "size"]

    def get_queryset(self):
        return (Image.objects.visible_to(self.scope).select_related("tenant", "created_by")
                .prefetch_related("copies__host"))

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "scope": self.scope}

    @extend_schema(request=ImageCreateSerializer, responses={201: ImageSerializer})
    def create(self, request):
        data = ImageCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        owner = _owner(request, self.scope, values)
        common = {"user": request.user, "tenant": owner, "name": values["name"], "visibility": values["visibility"],
                  "declared_format": values["declared_format"], "expected_checksum": values["checksum"],
                  "os_type": values["os_type"], "arch": values["arch"], "min_disk_gib": values["min_disk_gib"],
                  "min_memory_mib": values["min_memory_mib"]}
        if "url" in values:
            image = services.create_import(url=values["url"], **common)
        else:
            image = services.create_upload(size=values["size"], filename=values["filename"], **common)
        audit.note(request, target=image)
        return Response(ImageSerializer(image, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY}, responses={200: ImageSerializer},
        parameters=[OpenApiParameter("Content-Range", OpenApiTypes.STR, OpenApiParameter.HEADER,
                                     description="bytes START-END/TOTAL; leave out to send the whole file")],
    )
    @action(detail=True, methods=["put"], url_path="data", url_name="data")
    def data(self, request, pk=None):
        image = self.get_object()
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= 0:
            return Response({"detail": "Send the bytes with a Content-Length."}, status=status.HTTP_411_LENGTH_REQUIRED)
        start, total = parse_range(request.headers.get("Content-Range", ""), length)
        image = services.receive_chunk(image=image, start=start, length=length, total=total, stream=request.stream)
        if start > 0 and image.received_bytes < (image.expected_bytes or 0):
            audit.skip(request)  # the first and the last chunk are audited, not every one between
        return Response(ImageSerializer(image, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        image = self.get_object()
        services.delete_image(image=image)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplateViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                      viewsets.GenericViewSet):
    """Templates: an image with a default size, cloud-init user-data and a first-boot script.
    Create an instance from one with POST /api/v1/instances/ {"name": ..., "template": id}."""

    queryset = Template.objects.none()
    serializer_class = TemplateSerializer
    permission_classes = OPERATORS
    audit_name = "template"
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return Template.objects.visible_to(self.scope).select_related("tenant", "image")

    @extend_schema(request=TemplateCreateSerializer, responses={201: TemplateSerializer})
    def create(self, request):
        data = TemplateCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        owner = _owner(request, self.scope, values)
        image = Image.objects.visible_to(self.scope).filter(pk=values.pop("image")).first()
        if image is None:
            raise NotFound("No such image.")
        template = services.create_template(user=request.user, tenant=owner, image=image, **values)
        audit.note(request, target=template)
        return Response(TemplateSerializer(template).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TemplateSerializer, responses={200: TemplateSerializer})
    def partial_update(self, request, pk=None):
        template = self.get_object()
        data = TemplateSerializer(template, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        template = services.update_template(template=template, **data.validated_data)
        return Response(TemplateSerializer(template).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        services.delete_template(template=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class BootKernelViewSet(ScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        viewsets.GenericViewSet):
    """Boot kernels: a kernel and an optional initrd from the library, with a default command line. Boot one with
    POST /api/v1/instances/ {"boot_source": "kernel", "boot_kernel": id, ...}."""

    queryset = BootKernel.objects.none()
    serializer_class = BootKernelSerializer
    permission_classes = OPERATORS
    audit_name = "boot_kernel"
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return BootKernel.objects.visible_to(self.scope).select_related("tenant", "kernel", "initrd")

    @extend_schema(request=BootKernelCreateSerializer, responses={201: BootKernelSerializer})
    def create(self, request):
        data = BootKernelCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        owner = _owner(request, self.scope, values)
        images = Image.objects.visible_to(self.scope)
        for key in ("kernel", "initrd"):
            if values[key] is not None:
                values[key] = images.filter(pk=values[key]).first()
                if values[key] is None:
                    raise NotFound("No such image.")
        boot_kernel = services.create_boot_kernel(user=request.user, tenant=owner, **values)
        audit.note(request, target=boot_kernel)
        return Response(BootKernelSerializer(boot_kernel).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        services.delete_boot_kernel(boot_kernel=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
