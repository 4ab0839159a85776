"""django-ray: a Django 6 Tasks backend that runs tasks on Ray, with PostgreSQL as the record."""

__version__ = "0.1.0"
