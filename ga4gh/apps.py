from django.apps import AppConfig


class TesConfig(AppConfig):
    name = "ga4gh"
    verbose_name = "GA4GH TES tasks"
    default_auto_field = "django.db.models.BigAutoField"
