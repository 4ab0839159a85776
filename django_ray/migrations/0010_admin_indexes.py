"""The admin's index on ``(created_at, id)``: its newest-first order, date hierarchy and date
drill-downs (docs/performance.md).

On PostgreSQL it is built with ``CREATE INDEX CONCURRENTLY`` (so ``atomic = False``): a plain
``CREATE INDEX`` holds a lock that blocks every enqueue and every worker's claim and finish for
as long as the build takes on a large table, while the concurrent build lets them run. If the
migration is interrupted, PostgreSQL can leave an INVALID index behind: drop it with
``DROP INDEX CONCURRENTLY django_ray_created_idx;`` and run ``migrate`` again.
"""

from typing import Any

from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """``AddIndex``, built concurrently on PostgreSQL and plainly elsewhere (SQLite)."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.add_index(model, self.index, concurrently=True)
        else:
            schema_editor.add_index(model, self.index)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, self.index, concurrently=True)
        else:
            schema_editor.remove_index(model, self.index)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("django_ray", "0007_periodic_fires"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="raytaskexecution",
            index=models.Index(fields=["created_at", "id"], name="django_ray_created_idx"),
        ),
    ]
