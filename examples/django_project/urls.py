"""URLs of the example project; the paths match ``settings.KEYGUARD["POLICY"]``."""

from __future__ import annotations

from django.urls import path

from examples.django_project import views

urlpatterns = [
    path("health", views.health),
    path("agents", views.agents),
    path("tasks", views.tasks),
    path("tasks/<str:task_id>/execute", views.execute_task),
    path("api/agents", views.AgentList.as_view()),
    path("api/tasks/<str:task_id>/execute", views.ExecuteTask.as_view()),
]
