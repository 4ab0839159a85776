"""Wake workers through LISTEN/NOTIFY whenever rows become QUEUED (PostgreSQL only)."""

from django.db import migrations

from django_ray.lifecycle.statements import DROP_NOTIFY_TRIGGER_SQL, NOTIFY_TRIGGER_SQL


def install(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(NOTIFY_TRIGGER_SQL)


def uninstall(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_NOTIFY_TRIGGER_SQL)


class Migration(migrations.Migration):
    dependencies = [("django_ray", "0001_initial")]
    operations = [migrations.RunPython(install, uninstall)]
