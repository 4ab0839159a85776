import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_ray", "0006_unique_and_lock_keys"),
    ]

    operations = [
        migrations.CreateModel(
            name="PeriodicFire",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("schedule", models.CharField(max_length=200)),
                ("instant", models.DateTimeField(help_text="The scheduled instant (UTC).")),
                (
                    "task_id",
                    models.CharField(
                        blank=True,
                        help_text="The enqueued task (none: a skip marker).",
                        max_length=64,
                        null=True,
                    ),
                ),
                (
                    "skipped",
                    models.PositiveIntegerField(
                        default=0,
                        help_text="Instants skipped up to this one (older than the catch-up window).",
                    ),
                ),
                ("fired_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("worker_id", models.CharField(max_length=128)),
            ],
            options={
                "db_table": "django_ray_periodicfire",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("schedule", "instant"), name="django_ray_one_fire"
                    )
                ],
            },
        ),
    ]
