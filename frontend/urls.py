from django.urls import path

from frontend.views import evaluations, guidelines, labelers, labeling, pages, projects, quality, training

app_name = "frontend"

urlpatterns = [
    path("", labeling.home, name="home"),
    path("logout/", pages.logout_view, name="logout"),
    path("session/csrf/", labeling.session_csrf, name="session_csrf"),
    path("session/login/", labeling.session_login, name="session_login"),
    # labelers
    path("work/<int:project_id>/", labeling.work, name="work"),
    path("work/<int:project_id>/guideline/", labeling.guideline_acknowledge, name="guideline_ack"),
    path("work/assignments/<int:assignment_id>/submit/", labeling.submit, name="submit"),
    path("work/assignments/<int:assignment_id>/skip/", labeling.skip, name="skip"),
    # admins
    path("manage/projects/", projects.project_list, name="project_list"),
    path("manage/projects/new/", projects.project_create, name="project_create"),
    path("manage/projects/<int:project_id>/", projects.project_detail, name="project_detail"),
    path("manage/projects/<int:project_id>/edit/", projects.project_edit, name="project_edit"),
    path("manage/projects/<int:project_id>/import/", projects.project_import, name="project_import"),
    path(
        "manage/projects/<int:project_id>/imports/<int:job_id>/", projects.project_import_job, name="project_import_job"
    ),
    path("manage/projects/<int:project_id>/guidelines/", guidelines.guideline_page, name="guideline_page"),
    path(
        "manage/projects/<int:project_id>/guidelines/<int:version>/",
        guidelines.guideline_version,
        name="guideline_version",
    ),
    path("manage/guidelines/preview/", guidelines.guideline_preview, name="guideline_preview"),
    path("manage/labelers/", labelers.labeler_list, name="labeler_list"),
    path("manage/labelers/<int:user_id>/", labelers.labeler_update, name="labeler_update"),
    # quality
    path("manage/quality/", quality.quality_index, name="quality_index"),
    path("manage/projects/<int:project_id>/quality/", quality.quality_page, name="quality_page"),
    path("manage/projects/<int:project_id>/quality/refresh/", quality.quality_refresh, name="quality_refresh"),
    path("manage/projects/<int:project_id>/quality/sets/", quality.quality_sets, name="quality_sets"),
    path(
        "manage/projects/<int:project_id>/quality/labelers/<int:user_id>/override/",
        quality.quality_override,
        name="quality_override",
    ),
    path("manage/projects/<int:project_id>/review/", quality.review_queue, name="review_queue"),
    path("manage/projects/<int:project_id>/review/<int:set_id>/", quality.review_set, name="review_set"),
    path(
        "manage/projects/<int:project_id>/review/<int:set_id>/<slug:action>/",
        quality.review_action,
        name="review_action",
    ),
    # training
    path("manage/training/", training.training_index, name="training_index"),
    path("manage/projects/<int:project_id>/training/", training.training_page, name="training_page"),
    path("manage/projects/<int:project_id>/training/runs/", training.training_runs, name="training_runs"),
    path("manage/projects/<int:project_id>/training/start/", training.training_start, name="training_start"),
    path("manage/projects/<int:project_id>/training/rollback/", training.model_rollback, name="model_rollback"),
    path(
        "manage/projects/<int:project_id>/training/settings/",
        training.loop_settings_update,
        name="loop_settings_update",
    ),
    path("manage/projects/<int:project_id>/compare/", training.compare_page, name="compare_page"),
    path(
        "manage/projects/<int:project_id>/evaluations/start/",
        training.evaluation_create,
        name="evaluation_create",
    ),
    path("manage/projects/<int:project_id>/leaderboard/", evaluations.leaderboard_page, name="leaderboard_page"),
    path("manage/evaluations/<int:evaluation_id>/", evaluations.evaluation_detail, name="evaluation_detail"),
    path("manage/evaluations/<int:evaluation_id>/live/", evaluations.evaluation_live, name="evaluation_live"),
    path("manage/versions/<int:version_id>/promote/", training.model_promote, name="model_promote"),
    path("manage/runs/<int:run_id>/", training.run_detail, name="run_detail"),
    path("manage/runs/<int:run_id>/live/", training.run_live, name="run_live"),
    path("manage/runs/<int:run_id>/cancel/", training.run_cancel, name="run_cancel"),
    path("manage/<str:section>/", pages.coming, name="coming"),
]
