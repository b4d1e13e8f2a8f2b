"""Routes. The seed's paths have no trailing slash; TrailingSlashMiddleware makes the
slashed form answer too (see batchsite.middleware)."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from batches.api import views as catalog_views
from batchsite.dashboard import dashboard_view
from batchsite.health import healthz, readyz
from batchsite.metrics import metrics_view
from jobs.api import batch_views, event_views, share_views, webhook_views
from jobs.api import views as job_views

urlpatterns = [
    path("batches", batch_views.BatchListView.as_view(), name="batch-list"),
    path("batches/<uuid:batch_id>", batch_views.BatchDetailView.as_view(), name="batch-detail"),
    path("batches/<uuid:batch_id>/cancel", job_views.BatchCancelView.as_view(), name="batch-cancel"),
    path("batches/<uuid:batch_id>/retry", job_views.BatchRetryView.as_view(), name="batch-retry"),
    path("batches/<uuid:batch_id>/usage", batch_views.BatchUsageView.as_view(), name="batch-usage"),
    path("batches/<uuid:batch_id>/jobs", job_views.JobListView.as_view(), name="job-list"),
    path("batches/<uuid:batch_id>/jobs/<uuid:job_id>", job_views.JobDetailView.as_view(), name="job-detail"),
    path("batches/<uuid:batch_id>/jobs/<uuid:job_id>/cancel", job_views.JobCancelView.as_view(), name="job-cancel"),
    path("batches/<uuid:batch_id>/jobs/<uuid:job_id>/events", job_views.JobEventListView.as_view(), name="job-events"),
    path("batches/<uuid:batch_id>/jobs/<uuid:job_id>/attempts", job_views.JobAttemptListView.as_view(), name="job-attempts"),
    path("events", event_views.EventFeedView.as_view(), name="event-feed"),
    path("webhooks", webhook_views.WebhookListView.as_view(), name="webhook-list"),
    path("webhooks/<uuid:webhook_id>", webhook_views.WebhookDetailView.as_view(), name="webhook-detail"),
    path("webhooks/<uuid:webhook_id>/deliveries", webhook_views.DeliveryListView.as_view(), name="webhook-deliveries"),
    path("jobs/<uuid:job_id>", job_views.JobByIdView.as_view(), name="job-by-id"),
    path("logs/<uuid:log_id>", job_views.LogView.as_view(), name="log"),
    path("shares", share_views.ShareListView.as_view(), name="share-list"),
    path("tools", catalog_views.ToolListView.as_view(), name="tool-list"),
    path("tools/<uuid:tool_id>", catalog_views.ToolDetailView.as_view(), name="tool-detail"),
    path("filesystems", catalog_views.FilesystemListView.as_view(), name="filesystem-list"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("readyz", readyz, name="readyz"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("", include("ga4gh.urls")),
]

# The admin's side bar of every model took a fifth of a 1,400 px screen from the job
# list's columns; the home page and the breadcrumbs lead to every model.
admin.site.enable_nav_sidebar = False

handler400 = "batchsite.errors.bad_request"
handler403 = "batchsite.errors.forbidden"
handler404 = "batchsite.errors.not_found"
handler500 = "batchsite.errors.server_error"
