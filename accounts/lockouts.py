"""django-axes (the admin login's lockout after failed attempts) under a name that says
what it is on the admin's home page; its logs are not offered there
(accounts.lockout_admin)."""

from axes.apps import AppConfig as AxesConfig


class LoginLockoutsConfig(AxesConfig):
    verbose_name = "Login lockouts"
