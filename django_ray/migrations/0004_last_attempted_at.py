"""``last_attempted_at``: when the latest attempt started (``started_at`` keeps the first)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_ray", "0003_operator_permissions")]
    operations = [
        migrations.AddField(
            model_name="raytaskexecution",
            name="last_attempted_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the latest attempt started (started_at: the first).",
                null=True,
            ),
        ),
    ]
