from django.urls import path

from images import views

urlpatterns = [
    path("", views.image_list, name="image-list"),
    path("upload/", views.image_upload, name="image-upload"),
    path("import/", views.image_import, name="image-import"),
    path("templates/", views.template_list, name="template-list"),
    path("templates/<int:pk>/delete/", views.template_delete, name="template-delete"),
    path("boot-kernels/", views.boot_kernel_list, name="boot-kernel-list"),
    path("boot-kernels/<int:pk>/delete/", views.boot_kernel_delete, name="boot-kernel-delete"),
    path("<int:pk>/", views.image_detail, name="image-detail"),
    path("<int:pk>/copy/", views.image_copy, name="image-copy"),
    path("<int:pk>/delete/", views.image_delete, name="image-delete"),
    path("transfer/<str:token>/", views.image_transfer, name="image-transfer"),
]
