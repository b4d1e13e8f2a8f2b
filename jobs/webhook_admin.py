"""The operators' webhook pages: each user's webhooks (never their secrets) and every
delivery with its tries, read-only (`jobs.webhooks`, `jobs.webhook_delivery`)."""

from django.contrib import admin
from django.http import HttpRequest

from jobs.models import Delivery, Webhook


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """Webhook deliveries, read-only: what was sent where, and each try."""

    list_display = ["id", "event_type", "event_id", "webhook", "state", "created", "next_try", "delivered", "try_count"]
    list_filter = ["state", "event_type"]
    list_select_related = ["webhook"]
    search_fields = ["=batch_id", "=event_id"]
    readonly_fields = ["webhook", "event_id", "event_type", "batch_id", "payload", "state", "created", "next_try", "delivered", "tries"]
    show_full_result_count = False

    @admin.display(description="tries")
    def try_count(self, delivery: Delivery) -> int:
        return len(delivery.tries)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        # A pending delivery deleted alone would leave the later ones of its batch waiting
        # for it forever (`jobs.webhook_delivery`); deleting the webhook deletes them all.
        return False


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "owner", "event_types", "created", "cursor"]
    list_select_related = ["owner"]
    search_fields = ["url", "owner__username"]
    fields = ["owner", "url", "event_types", "created", "cursor"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
