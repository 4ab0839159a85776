from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_ray", "0004_last_attempted_at")]

    operations = [
        migrations.AddField(
            model_name="raytaskexecution",
            name="requested_run_after",
            field=models.DateTimeField(
                blank=True,
                help_text="The run_after the task was enqueued with (None: as soon as possible); "
                "run_after itself moves with retries.",
                null=True,
            ),
        ),
    ]
