"""The admin benchmark: the Django admin's pages at 200,000 execution rows on PostgreSQL."""
