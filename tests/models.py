from django.db import models


class TaskProbe(models.Model):
    """A row written by a test task, proving where and how often it ran."""

    name = models.CharField(max_length=200, db_index=True)
    pid = models.IntegerField()
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
