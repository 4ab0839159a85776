"""Dedupe keys (unique enqueue) and lock keys (serialized tasks): columns, the partial unique
indexes that enforce them, and the trigger that lets a requeued row give up a taken key."""

from django.db import migrations, models

from django_ray.lifecycle.statements import (
    DROP_UNIQUE_REQUEUE_TRIGGER_SQL,
    UNIQUE_REQUEUE_TRIGGER_SQL,
)


def install(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNIQUE_REQUEUE_TRIGGER_SQL)


def uninstall(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_UNIQUE_REQUEUE_TRIGGER_SQL)


class Migration(migrations.Migration):
    dependencies = [
        ("django_ray", "0005_requested_run_after"),
    ]

    operations = [
        migrations.AddField(
            model_name="raytaskexecution",
            name="lock_key",
            field=models.CharField(
                blank=True,
                help_text="Serialization key: no two rows with this key run at the same time.",
                max_length=255,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="raytaskexecution",
            name="unique_key",
            field=models.CharField(
                blank=True,
                help_text="Dedupe key: while this row is QUEUED (or running, with unique_while_running) enqueueing the same key returns this row.",
                max_length=255,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="raytaskexecution",
            name="unique_while_running",
            field=models.BooleanField(
                default=False, help_text="The dedupe key is also held while the row runs."
            ),
        ),
        migrations.AddConstraint(
            model_name="raytaskexecution",
            constraint=models.UniqueConstraint(
                condition=models.Q(
                    ("unique_key__isnull", False),
                    models.Q(
                        ("state", "QUEUED"),
                        models.Q(
                            ("state__in", ["RUNNING", "CANCELLING"]), ("unique_while_running", True)
                        ),
                        _connector="OR",
                    ),
                ),
                fields=("unique_key",),
                name="django_ray_unique_key_held",
            ),
        ),
        migrations.AddConstraint(
            model_name="raytaskexecution",
            constraint=models.UniqueConstraint(
                condition=models.Q(
                    ("lock_key__isnull", False), ("state__in", ["RUNNING", "CANCELLING"])
                ),
                fields=("lock_key",),
                name="django_ray_lock_key_held",
            ),
        ),
        migrations.RunPython(install, uninstall),
    ]
