"""A Django 5.2 project with celery, laid out as celery's Django guide has it."""

# Load the celery app whenever Django starts, so @shared_task binds to it.
from .celery import app as celery_app

__all__ = ("celery_app",)
