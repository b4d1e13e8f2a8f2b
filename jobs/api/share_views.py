"""`GET /shares`: fair share as the caller stands in it (an operator: every user)."""

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.fairshare import share_report


class ShareSerializer(serializers.Serializer):
    username = serializers.CharField()
    weight = serializers.IntegerField(help_text="The user's weight (default 1), relative to the others' in their group or at the top.")
    group = serializers.CharField(allow_null=True, help_text="The user's group (a team), or null.")
    group_weight = serializers.IntegerField(allow_null=True, help_text="The group's weight, or null without a group.")
    usage_cpu_seconds = serializers.FloatField(
        help_text="Decayed usage: cpu-seconds of the user's attempts, each halved every BATCHES_FAIRSHARE_HALF_LIFE seconds; running ones count as they run."
    )
    fair_share = serializers.FloatField(help_text="The part of the machine (0 to 1) the weights give the user among those with work.")
    current_share = serializers.FloatField(help_text="The part of the running cpus the user holds now (0 to 1).")
    running_jobs = serializers.IntegerField()
    running_cpus = serializers.IntegerField()
    waiting_jobs = serializers.IntegerField(help_text="Jobs SUBMITTED, PENDING or RUNNABLE.")


class ShareListView(APIView):
    @extend_schema(
        operation_id="list_shares",
        summary="Fair share: weights, usage and shares",
        description=(
            "The caller's standing in fair share: weight, group, decayed usage, fair and current share, running and waiting "
            "jobs. An operator's (staff) token sees every user who has a share, usage or work. The half-life of usage is the "
            "X-Fairshare-Half-Life header (seconds)."
        ),
        responses={200: ShareSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        report = share_report(user=request.user, everyone=request.user.is_staff, now=timezone.now())
        return Response(report, headers={"X-Fairshare-Half-Life": str(settings.BATCHES_FAIRSHARE_HALF_LIFE)})
