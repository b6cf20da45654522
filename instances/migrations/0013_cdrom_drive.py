from django.db import migrations, models


class Migration(migrations.Migration):
    """Instances made before this had a CD-ROM drive whether asked or not; new ones have one when asked."""

    dependencies = [("instances", "0012_create_without_start")]

    operations = [
        migrations.AddField(model_name="instance", name="cdrom_drive", field=models.BooleanField(default=True)),
        migrations.AlterField(model_name="instance", name="cdrom_drive", field=models.BooleanField(default=False)),
    ]
