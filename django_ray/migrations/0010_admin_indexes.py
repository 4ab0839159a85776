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
    """``AddIndex``, built (and dropped) concurrently on PostgreSQL and plainly elsewhere."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._apply(app_label, schema_editor, to_state, "add_index")

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._apply(app_label, schema_editor, from_state, "remove_index")

    def _apply(self, app_label: str, schema_editor: Any, state: Any, method: str) -> None:
        model = state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        postgres = schema_editor.connection.vendor == "postgresql"
        getattr(schema_editor, method)(
            model, self.index, **({"concurrently": True} if postgres else {})
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("django_ray", "0009_ray_resources"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="raytaskexecution",
            index=models.Index(fields=["created_at", "id"], name="django_ray_created_idx"),
        ),
    ]
