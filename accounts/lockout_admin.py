"""The admin login's lockouts (django-axes) on the admin's home page: one entry, the
failed attempts per user name and address, under "Login lockouts". Deleting an
operator's row there (or `python manage.py axes_reset_username NAME`) lifts their
lockout at once. The access logs axes also registers are not offered: they filled the
home page and nobody acts on them there."""

import axes.admin  # noqa: F401 (registers axes' pages first, so that they can be taken off)
from axes.models import AccessFailureLog, AccessLog
from django.contrib import admin

for model in (AccessLog, AccessFailureLog):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
