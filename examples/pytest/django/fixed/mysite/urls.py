"""The URLconf: three GET routes without parameters (one needs a login), one with, one POST."""

from django.urls import path

from mysite import views

urlpatterns = [
    path("", views.index),
    path("items/", views.items),
    path("items/<int:pk>/", views.item),
    path("orders/", views.Orders.as_view()),
    path("account/", views.account),
]
