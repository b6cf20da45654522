from django.db import migrations, models


def existing_are_x86(apps, schema_editor):
    """Every QEMU guest made before architectures were chosen is x86_64 (the only one the panel described)."""
    Instance = apps.get_model("instances", "Instance")
    Instance.objects.filter(arch="", host__technology="qemu").update(arch="x86_64")


class Migration(migrations.Migration):

    dependencies = [
        ('instances', '0023_host_steps'),
        ('hosts', '0006_guests'),
    ]

    operations = [
        migrations.AddField(
            model_name='instance',
            name='arch',
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.AddField(
            model_name='instance',
            name='cpu_mode',
            field=models.CharField(blank=True, choices=[('', "The hypervisor's default"), ('host-passthrough', 'Host passthrough (fastest; migrates only between identical hosts)'), ('host-model', "Host model (close to the host's, migration-safe)"), ('custom', 'A named model (the most portable)')], default='', max_length=16),
        ),
        migrations.AddField(
            model_name='instance',
            name='cpu_model',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='instance',
            name='machine',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(existing_are_x86, migrations.RunPython.noop),
    ]
