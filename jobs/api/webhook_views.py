"""`/webhooks`: register a receiver of the caller's events (its secret shown once), list
and delete them, and see each delivery's tries. Another user's webhook is 404."""

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.pagination import KeysetPagination
from jobs.models import Delivery, Webhook
from jobs.webhooks import EVENT_TYPES, WebhookRefused, delete_webhook, register_webhook, user_webhooks, webhook_deliveries

NOT_FOUND = OpenApiResponse(description="No such webhook for this user (another user's is also 404).")


class WebhookInSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, help_text="http:// or https://; not on a private or loopback address.")
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES), min_length=1, max_length=len(EVENT_TYPES))


class WebhookSerializer(serializers.ModelSerializer):
    class Meta:
        model = Webhook
        fields = ["id", "url", "event_types", "created"]


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(help_text="Signs every delivery (X-Batches-Signature); shown this once.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class TrySerializer(serializers.Serializer):
    time = serializers.DateTimeField()
    status = serializers.IntegerField(required=False, help_text="The receiver's HTTP status, if it answered.")
    error = serializers.CharField(required=False, help_text="Why there was no answer (timeout, refused, not allowed).")
    ms = serializers.IntegerField(help_text="How long the try took.")


class DeliverySerializer(serializers.ModelSerializer):
    tries = TrySerializer(many=True)

    class Meta:
        model = Delivery
        fields = ["id", "event_id", "event_type", "batch_id", "state", "created", "next_try", "delivered", "tries"]


class WebhookListView(generics.ListAPIView):
    serializer_class = WebhookSerializer
    pagination_class = KeysetPagination
    cursor_field = "id"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Webhook.objects.none()
        return user_webhooks(owner=self.request.user)

    @extend_schema(operation_id="list_webhooks", summary="The caller's webhooks (never their secrets)")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="create_webhook",
        summary="Register a receiver of the caller's events",
        description=(
            "Each event of the caller's feed (GET /events) of the types asked for, from now on, is POSTed to `url` as "
            "JSON, signed with HMAC-SHA256 (`X-Batches-Signature: v1=<hex>` over `<X-Batches-Timestamp>.<body>`), "
            "at least once, in order per batch, retried with backoff for 25 hours. A receiver on a private, loopback "
            "or link-local address is refused (400) unless the operator set BATCHES_WEBHOOK_ALLOW_PRIVATE=1."
        ),
        request=WebhookInSerializer,
        responses={201: WebhookCreatedSerializer},
    )
    def post(self, request: Request) -> Response:
        given = WebhookInSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            webhook, secret = register_webhook(owner=request.user, **given.validated_data)
        except WebhookRefused as exc:
            raise ValidationError({exc.field: [str(exc)]}) from exc
        webhook.secret = secret
        return Response(WebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    @extend_schema(operation_id="delete_webhook", summary="Delete a webhook and its deliveries", responses={204: None, 404: NOT_FOUND})
    def delete(self, request: Request, webhook_id: str) -> Response:
        if not delete_webhook(owner=request.user, webhook_id=webhook_id):
            raise Http404
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeliveryListView(generics.ListAPIView):
    serializer_class = DeliverySerializer
    pagination_class = KeysetPagination
    cursor_field = "id"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Delivery.objects.none()
        webhook = user_webhooks(owner=self.request.user).filter(pk=self.kwargs["webhook_id"]).first()
        if webhook is None:
            raise Http404
        return webhook_deliveries(webhook=webhook)

    @extend_schema(
        operation_id="list_webhook_deliveries",
        summary="A webhook's deliveries, oldest first, with each try",
        responses={200: DeliverySerializer(many=True), 404: NOT_FOUND},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)
