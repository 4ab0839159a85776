"""Operator permissions for the admin's retry and cancel actions."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("django_ray", "0002_notify_trigger"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="raytaskexecution",
            options={
                "permissions": [
                    (
                        "retry_raytaskexecution",
                        "Can retry failed, lost or cancelled task executions",
                    ),
                    ("cancel_raytaskexecution", "Can cancel queued or running task executions"),
                ]
            },
        ),
    ]
