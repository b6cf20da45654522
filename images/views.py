"""The library pages, and the transfer endpoint through which workers move image bytes."""

import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from cloudpanel.exceptions import DomainError
from cloudpanel.scoping import Need
from cloudpanel.streaming import file_blocks, streamed
from hosts.models import Host
from images import services, store, transfer
from images.choices import DiskFormat, ImageStatus, Visibility
from images.exceptions import UploadIncomplete
from images.filtersets import ImageFilterSet
from images.forms import BootKernelForm, ImageForm, ImportForm, TemplateForm
from images.models import BootKernel, Image, Template
from tenants import audit
from tenants.pages import object_write, operated_tenants, require_create
from tenants.scoping import scope_of


def _owner(scope, data: dict):
    tenant = data.get("tenant") or scope.tenant
    return services.owner_for(scope, visibility=data.get("visibility", Visibility.PRIVATE), tenant=tenant)


@login_required
def image_list(request):
    scope = scope_of(request)
    queryset = Image.objects.visible_to(scope).select_related("tenant").prefetch_related("copies__host")
    filterset = ImageFilterSet(request.GET, queryset=queryset)
    page = Paginator(filterset.qs, 50).get_page(request.GET.get("page"))
    return render(request, "images/list.html", {
        "page": page, "statuses": ImageStatus.choices, "formats": DiskFormat.choices,
        "visibilities": Visibility.choices, "can_add": scope.may_create,
    })


def _initial(scope) -> dict:
    return {"tenant": scope.tenant} if scope.tenant else {"visibility": Visibility.PUBLIC}


@login_required
def image_upload(request):
    """The upload page: the browser sends the file in resumable chunks through the API."""
    scope = scope_of(request)
    require_create(request, scope)
    form = ImageForm(tenants=operated_tenants(scope), admin=scope.admin, initial=_initial(scope))
    return render(request, "images/upload.html", {
        "form": form, "chunk_bytes": settings.CLOUDPANEL_UPLOAD_CHUNK_MIB << 20,
        "tenant_id": scope.tenant.pk if scope.tenant else "",
    })


@login_required
def image_import(request):
    scope = scope_of(request)
    if request.method == "POST":
        audit.note(request, action="image.create")
    require_create(request, scope)
    form = ImportForm(request.POST or None, tenants=operated_tenants(scope), admin=scope.admin,
                      initial=_initial(scope))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            owner = _owner(scope, data)
            audit.note(request, tenant=owner)
            image = services.create_import(
                user=request.user, tenant=owner, name=data["name"], url=data["url"],
                visibility=data.get("visibility", Visibility.PRIVATE), declared_format=data["declared_format"],
                expected_checksum=data["checksum"], os_type=data["os_type"], arch=data["arch"],
                min_disk_gib=data["min_disk_gib"],
                min_memory_mib=data["min_memory_mib"],
            )
        except DomainError as exc:
            form.add_error(None, str(exc))
            audit.refused(request, str(exc), show=False)
        else:
            audit.note(request, target=image)
            messages.success(request, f"Importing {image.name}.")
            return redirect("image-detail", pk=image.pk)
    return render(request, "images/import.html", {"form": form})


@login_required
def image_detail(request, pk: int):
    scope = scope_of(request)
    image = get_object_or_404(Image.objects.visible_to(scope).select_related("tenant", "created_by"), pk=pk)
    copies = list(image.copies.select_related("host"))
    copied = {c.host_id for c in copies}
    return render(request, "images/detail.html", {
        "image": image, "can_change": scope.can_change(image.tenant_id), "copies": copies,
        # Where a platform image came from and who made it are the platform's business.
        "details": scope.admin or image.tenant_id in (scope.tenant_ids or []),
        "hosts": [h for h in Host.objects.filter(enabled=True) if h.pk not in copied and h.can.library]
        if scope.admin else [],
        "users": image.instances.live().in_scope(scope)[:50],
        "chunk_bytes": settings.CLOUDPANEL_UPLOAD_CHUNK_MIB << 20,
    })


def _image_page(image: Image) -> str:
    return reverse("image-detail", args=[image.pk])


@object_write(Image.objects.visible_to, action="image.copy", back=_image_page, need=Need.ADMIN, platform=True)
def image_copy(request, image: Image):
    """A platform admin caches the image on a host ahead of its first use there."""
    wanted = request.POST.get("host", "")
    host = Host.objects.filter(pk=int(wanted)).first() if re.fullmatch(r"\d{1,18}", wanted) else None
    if host is None:
        raise DomainError("Choose a host to copy the image to.")
    services.request_copy(image=image, host=host)
    messages.success(request, f"Copying {image.name} to {host.name}.")
    return redirect(_image_page(image))


def _created(request, scope, form, *, action: str, create) -> object | None:
    """A library object added through a page's form: audited as action, refused for read-only roles, made by
    create(user=..., tenant=..., visibility=..., **fields); None while the form is shown (again)."""
    if request.method != "POST":
        return None
    audit.note(request, action=action)
    require_create(request, scope)
    if not form.is_valid():
        return None
    data = dict(form.cleaned_data)
    try:
        owner = _owner(scope, data)
        audit.note(request, tenant=owner)
        made = create(user=request.user, tenant=owner, visibility=data.pop("visibility", Visibility.PRIVATE),
                      **{k: v for k, v in data.items() if k != "tenant"})
    except DomainError as exc:
        form.add_error(None, str(exc))
        audit.refused(request, str(exc), show=False)
        return None
    audit.note(request, target=made)
    messages.success(request, f"{made.name} saved.")
    return made


@login_required
def template_list(request):
    """Templates visible in the scope, and a form to add one."""
    scope = scope_of(request)
    images = Image.objects.visible_to(scope).filter(status=ImageStatus.AVAILABLE,
                                                    disk_format__in=(DiskFormat.QCOW2, DiskFormat.RAW))
    form = TemplateForm(request.POST or None, images=images, tenants=operated_tenants(scope), admin=scope.admin,
                        initial=_initial(scope))
    if _created(request, scope, form, action="template.create", create=services.create_template):
        return redirect("template-list")
    templates = Template.objects.visible_to(scope).select_related("tenant", "image")
    return render(request, "images/templates.html", {
        "templates": [(t, scope.can_change(t.tenant_id)) for t in templates], "form": form,
        "can_add": scope.may_create,
    })


@login_required
def boot_kernel_list(request):
    """Boot kernels visible in the scope, and a form to add one from kernel and initrd images."""
    scope = scope_of(request)
    available = Image.objects.visible_to(scope).filter(status=ImageStatus.AVAILABLE)
    form = BootKernelForm(request.POST or None, kernels=available.filter(disk_format=DiskFormat.KERNEL),
                          initrds=available.filter(disk_format=DiskFormat.INITRD), tenants=operated_tenants(scope),
                          admin=scope.admin, initial=_initial(scope))
    if _created(request, scope, form, action="boot_kernel.create", create=services.create_boot_kernel):
        return redirect("boot-kernel-list")
    kernels = BootKernel.objects.visible_to(scope).select_related("tenant", "kernel", "initrd")
    return render(request, "images/boot_kernels.html", {
        "boot_kernels": [(k, scope.can_change(k.tenant_id)) for k in kernels], "form": form,
        "can_add": scope.may_create,
    })


@object_write(BootKernel.objects.visible_to, action="boot_kernel.delete", back=lambda _: reverse("boot-kernel-list"))
def boot_kernel_delete(request, boot_kernel: BootKernel):
    services.delete_boot_kernel(boot_kernel=boot_kernel)
    messages.success(request, f"{boot_kernel.name} deleted.")
    return redirect("boot-kernel-list")


@object_write(Template.objects.visible_to, action="template.delete", back=lambda _: reverse("template-list"))
def template_delete(request, template: Template):
    services.delete_template(template=template)
    messages.success(request, f"{template.name} deleted.")
    return redirect("template-list")


@object_write(Image.objects.visible_to, action="image.delete", back=_image_page)
def image_delete(request, image: Image):
    services.delete_image(image=image)
    messages.success(request, f"Deleted {image.name}.")
    return redirect("image-list")


@csrf_exempt
def image_transfer(request, token: str):
    """A worker reads (GET), replaces (PUT) or discards (DELETE) an image's bytes with a signed URL."""
    operation = {"GET": transfer.READ, "PUT": transfer.WRITE, "DELETE": transfer.DISCARD}.get(request.method)
    if operation is None:
        return HttpResponse(status=405, headers={"Allow": "GET, PUT, DELETE"})
    audit.skip(request)  # the worker's part is recorded on the image; the URL is a credential
    key = transfer.verify(token, operation)
    if key is None:
        return HttpResponse("This transfer URL is not valid (forged, expired or for another use).", status=403)
    image = Image.objects.filter(uuid=key).first()
    if operation == transfer.DISCARD:
        if image is not None and image.status != ImageStatus.ERROR:
            return HttpResponse("Only a failed image's bytes can be discarded.", status=409)
        store.remove(key)
        return HttpResponse(status=204)
    if image is None:
        raise Http404("No such image.")
    if operation == transfer.READ:
        path = store.data_path(key)
        if not path.exists():
            raise Http404("The image has no stored bytes.")
        return streamed(request, file_blocks(path), content_type="application/octet-stream",
                        headers={"Content-Length": str(path.stat().st_size)})
    if image.status not in (ImageStatus.IMPORTING, ImageStatus.INSPECTING):
        return HttpResponse(f"The image is {image.get_status_display().lower()}; its bytes are settled.", status=409)
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length <= 0:
            raise ValueError
        store.replace(key, length=length, stream=request)
    except ValueError:
        return HttpResponse("Send a Content-Length.", status=411)
    except UploadIncomplete as exc:
        return HttpResponse(str(exc), status=400)
    if not Image.objects.filter(uuid=key, status__in=(ImageStatus.IMPORTING, ImageStatus.INSPECTING)).exists():
        store.remove(key)  # failed or deleted while its bytes came in: keep none of them
        return HttpResponse("The image failed or was deleted while its bytes were sent.", status=409)
    return HttpResponse(status=204)
