from django.urls import path

from instances import views

urlpatterns = [
    path("", views.instance_list, name="instance-list"),
    path("new/", views.instance_new, name="instance-new"),
    path("<int:pk>/", views.instance_detail, name="instance-detail"),
    path("<int:pk>/op/<str:operation>/", views.instance_operation, name="instance-operation"),
    path("<int:pk>/media/", views.instance_media, name="instance-media"),
    path("<int:pk>/nic/<str:change>/", views.instance_nic, name="instance-nic"),
    path("<int:pk>/resize/", views.instance_resize, name="instance-resize"),
    path("<int:pk>/rebuild/", views.instance_rebuild, name="instance-rebuild"),
    path("<int:pk>/rename/", views.instance_rename, name="instance-rename"),
    path("<int:pk>/save-image/", views.instance_save_image, name="instance-save-image"),
    path("<int:pk>/clone/", views.instance_clone, name="instance-clone"),
    path("<int:pk>/migrate/", views.instance_migrate, name="instance-migrate"),
    path("<int:pk>/migrate/cancel/", views.instance_migrate_cancel, name="instance-migrate-cancel"),
    path("<int:pk>/maintenance-policy/", views.instance_maintenance_policy, name="instance-maintenance-policy"),
    path("<int:pk>/backups/", views.instance_backup, name="instance-backup"),
    path("backups/<int:pk>/<str:change>/", views.backup_change, name="backup-change"),
    path("<int:pk>/snapshots/", views.instance_snapshot, name="instance-snapshot"),
    path("<int:pk>/attach-volume/", views.instance_attach_volume, name="instance-attach-volume"),
    path("<int:pk>/snapshots/<str:change>/", views.instance_snapshot_change, name="instance-snapshot-change"),
    path("topology/", views.topology, name="network-topology"),
    path("actions/", views.action_list, name="action-list"),
    path("actions/<int:pk>/retry/", views.action_retry, name="action-retry"),
    path("adopt/<int:pk>/", views.instance_adopt, name="instance-adopt"),
]
