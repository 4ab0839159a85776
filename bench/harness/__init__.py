"""The django-ray benchmark harness: ``bench/run`` (see ``bench/README.md``)."""
