from django.db import migrations, models


def qemu_only(apps, schema_editor):
    """Of the instances made before, QEMU guests had a CD-ROM drive whether asked or not; others had none."""
    apps.get_model("instances", "Instance").objects.exclude(host__technology="qemu").update(cdrom_drive=False)


class Migration(migrations.Migration):
    dependencies = [("instances", "0012_create_without_start"), ("hosts", "0001_initial")]

    operations = [
        migrations.AddField(model_name="instance", name="cdrom_drive", field=models.BooleanField(default=True)),
        migrations.RunPython(qemu_only, migrations.RunPython.noop),
        migrations.AlterField(model_name="instance", name="cdrom_drive", field=models.BooleanField(default=False)),
    ]
