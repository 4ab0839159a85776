"""Django app configuration: registers the settings system checks."""

from django.apps import AppConfig
from django.core import checks


class DjangoRayConfig(AppConfig):
    name = "django_ray"
    verbose_name = "django-ray tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_ray.conf import check_settings

        checks.register(check_settings, "django_ray")
