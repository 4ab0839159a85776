import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_ray", "0007_periodic_fires"),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskEffect",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "key",
                    models.CharField(help_text="The caller's effect key.", max_length=255),
                ),
                (
                    "attempt_number",
                    models.PositiveIntegerField(help_text="The attempt that applied it."),
                ),
                ("applied_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "execution",
                    models.ForeignKey(
                        db_column="task_id",
                        db_index=False,
                        help_text="The task (its TaskResult.id) that applied the effect.",
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="effects",
                        to="django_ray.raytaskexecution",
                        to_field="task_id",
                    ),
                ),
            ],
            options={
                "db_table": "django_ray_taskeffect",
                "ordering": ["applied_at", "id"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("execution", "key"), name="django_ray_one_effect"
                    )
                ],
            },
        ),
    ]
