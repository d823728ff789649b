"""
URL configuration for shop project: django-admin startproject's, plus a health check and a
product catalogue built when the module is imported.

Django imports the URLconf on a worker's first request, not when the worker starts: the
catalogue below (100,000 lines, ~0.1 s of CPU) is built in that request, and the worker's
hub runs nothing else meanwhile. Every worker's first users wait for it after each deploy.
"""
from django.contrib import admin
from django.urls import path

from shop.views import health

CATALOGUE = "\n".join(f"{n:06d};product {n};{n * 7 % 1000}.{n % 100:02d} EUR;in stock"
                      for n in range(100_000))
PRODUCTS = {line.split(";", 1)[0]: line for line in CATALOGUE.splitlines()}

urlpatterns = [
    path('admin/', admin.site.urls),
    path('health/', health),
]
