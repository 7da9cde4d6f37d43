from django.urls import path

from annotation.api import data, imports, labeling, projects

urlpatterns = [
    # First: every labeler requests these for every item, and routes are tried in order.
    path("projects/<int:project_id>/assignments/next/", labeling.LeaseNextApi.as_view(), name="assignment-next"),
    path("assignments/<int:assignment_id>/submit/", labeling.RankingSubmitApi.as_view(), name="ranking-submit"),
    path("projects/", projects.ProjectListCreateApi.as_view(), name="project-list"),
    path("projects/<int:project_id>/", projects.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<int:project_id>/stats/", projects.ProjectStatsApi.as_view(), name="project-stats"),
    path("projects/<int:project_id>/guidelines/", projects.GuidelineListPublishApi.as_view(), name="guideline-list"),
    path(
        "projects/<int:project_id>/guidelines/<int:version>/",
        projects.GuidelineDetailApi.as_view(),
        name="guideline-detail",
    ),
    path(
        "projects/<int:project_id>/guidelines/<int:version>/acknowledge/",
        projects.GuidelineAcknowledgeApi.as_view(),
        name="guideline-acknowledge",
    ),
    path("projects/<int:project_id>/import/", imports.ImportApi.as_view(), name="project-import"),
    path("import-jobs/<int:job_id>/", imports.ImportJobApi.as_view(), name="import-job"),
    path("projects/<int:project_id>/prompts/", data.PromptListApi.as_view(), name="prompt-list"),
    path("projects/<int:project_id>/response-sets/", data.ResponseSetListApi.as_view(), name="response-set-list"),
    path("projects/<int:project_id>/rankings/", data.RankingListApi.as_view(), name="ranking-list"),
    path("projects/<int:project_id>/comparisons/", data.ComparisonListApi.as_view(), name="comparison-list"),
    path("projects/<int:project_id>/export/", data.ExportApi.as_view(), name="project-export"),
    path("projects/<int:project_id>/progress/", labeling.LabelerProgressApi.as_view(), name="labeler-progress"),
    path("assignments/", labeling.AssignmentListApi.as_view(), name="assignment-list"),
    path("assignments/<int:assignment_id>/", labeling.AssignmentDetailApi.as_view(), name="assignment-detail"),
    path("assignments/<int:assignment_id>/skip/", labeling.AssignmentSkipApi.as_view(), name="assignment-skip"),
]
