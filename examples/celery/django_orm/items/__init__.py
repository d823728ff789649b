"""A Django app whose tasks use the ORM's database connection."""
