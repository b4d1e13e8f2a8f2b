"""GA4GH TES v1.1 routes. A task id never holds a colon, so `{id}:cancel` is its own
route (the spec's Google-style custom method)."""

from django.urls import re_path

from ga4gh import views

ID = r"(?P<task_id>[^/:]+)"

urlpatterns = [
    re_path(r"^ga4gh/tes/v1/service-info$", views.ServiceInfoView.as_view(), name="tes-service-info"),
    re_path(r"^ga4gh/tes/v1/tasks$", views.TaskListView.as_view(), name="tes-tasks"),
    re_path(rf"^ga4gh/tes/v1/tasks/{ID}:cancel$", views.TaskCancelView.as_view(), name="tes-task-cancel"),
    re_path(rf"^ga4gh/tes/v1/tasks/{ID}$", views.TaskDetailView.as_view(), name="tes-task"),
]
