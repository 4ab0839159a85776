"""The operator application the molecule scenarios deploy (with ``django_ray_app_source``).

A minimal Django project written the way an operator's would be: settings from the environment
the django-ray package provides, the django-ray backend, ``/api/metrics``, and a small HTTP API
the scenarios use to enqueue tasks through the web host and read their outcome.
"""
