from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_ray", "0008_task_effects"),
    ]

    operations = [
        migrations.AddField(
            model_name="raytaskexecution",
            name="ray_options",
            field=models.JSONField(
                blank=True,
                help_text="Ray resources and runtime_env of this task (its own over its queue's "
                "default; docs/resources.md); null: the worker's defaults.",
                null=True,
            ),
        ),
    ]
