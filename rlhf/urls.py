from django.urls import path

from rlhf import api

urlpatterns = [
    path("model-versions/", api.ModelVersionListCreateApi.as_view(), name="model-version-list"),
    path("model-versions/compare/", api.ModelVersionCompareApi.as_view(), name="model-version-compare"),
    path("model-versions/<int:version_id>/", api.ModelVersionDetailApi.as_view(), name="model-version-detail"),
    path(
        "model-versions/<int:version_id>/promote/", api.ModelVersionPromoteApi.as_view(), name="model-version-promote"
    ),
    path("projects/<int:project_id>/runs/", api.TrainingRunListCreateApi.as_view(), name="run-list"),
    path("projects/<int:project_id>/loop-settings/", api.LoopSettingsApi.as_view(), name="loop-settings"),
    path("projects/<int:project_id>/rollback/", api.ModelVersionRollbackApi.as_view(), name="model-rollback"),
    path("projects/<int:project_id>/evaluations/", api.EvaluationListCreateApi.as_view(), name="evaluation-list"),
    path("projects/<int:project_id>/leaderboard/", api.LeaderboardApi.as_view(), name="leaderboard"),
    path("projects/<int:project_id>/leaderboard.csv", api.LeaderboardCsvApi.as_view(), name="leaderboard-csv"),
    path("evaluations/<int:evaluation_id>/", api.EvaluationDetailApi.as_view(), name="evaluation-detail"),
    path("runs/<int:run_id>/", api.TrainingRunDetailApi.as_view(), name="run-detail"),
    path("runs/<int:run_id>/cancel/", api.TrainingRunCancelApi.as_view(), name="run-cancel"),
]
