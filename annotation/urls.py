from django.urls import path

from annotation import api

urlpatterns = [
    # First: every labeler requests these for every item, and routes are tried in order.
    path("projects/<int:project_id>/assignments/next/", api.LeaseNextApi.as_view(), name="assignment-next"),
    path("assignments/<int:assignment_id>/submit/", api.RankingSubmitApi.as_view(), name="ranking-submit"),
    path("projects/", api.ProjectListCreateApi.as_view(), name="project-list"),
    path("projects/<int:project_id>/", api.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<int:project_id>/stats/", api.ProjectStatsApi.as_view(), name="project-stats"),
    path("projects/<int:project_id>/guidelines/", api.GuidelineListPublishApi.as_view(), name="guideline-list"),
    path(
        "projects/<int:project_id>/guidelines/<int:version>/",
        api.GuidelineDetailApi.as_view(),
        name="guideline-detail",
    ),
    path(
        "projects/<int:project_id>/guidelines/<int:version>/acknowledge/",
        api.GuidelineAcknowledgeApi.as_view(),
        name="guideline-acknowledge",
    ),
    path("projects/<int:project_id>/import/", api.ImportApi.as_view(), name="project-import"),
    path("import-jobs/<int:job_id>/", api.ImportJobApi.as_view(), name="import-job"),
    path("projects/<int:project_id>/prompts/", api.PromptListApi.as_view(), name="prompt-list"),
    path("projects/<int:project_id>/response-sets/", api.ResponseSetListApi.as_view(), name="response-set-list"),
    path("projects/<int:project_id>/rankings/", api.RankingListApi.as_view(), name="ranking-list"),
    path("projects/<int:project_id>/comparisons/", api.ComparisonListApi.as_view(), name="comparison-list"),
    path("projects/<int:project_id>/export/", api.ExportApi.as_view(), name="project-export"),
    path("projects/<int:project_id>/progress/", api.LabelerProgressApi.as_view(), name="labeler-progress"),
    path("projects/<int:project_id>/agreement/", api.AgreementApi.as_view(), name="agreement"),
    path("projects/<int:project_id>/agreement/refresh/", api.AgreementRefreshApi.as_view(), name="agreement-refresh"),
    path("projects/<int:project_id>/agreement/<str:table>.csv", api.AgreementCsvApi.as_view(), name="agreement-csv"),
    path("projects/<int:project_id>/response-sets/<int:set_id>/gold/", api.GoldApi.as_view(), name="set-gold"),
    path(
        "projects/<int:project_id>/response-sets/<int:set_id>/review/accept/",
        api.ReviewAcceptApi.as_view(),
        name="review-accept",
    ),
    path(
        "projects/<int:project_id>/response-sets/<int:set_id>/review/more-labels/",
        api.ReviewMoreLabelsApi.as_view(),
        name="review-more-labels",
    ),
    path(
        "projects/<int:project_id>/labelers/<int:user_id>/override/",
        api.LabelerOverrideApi.as_view(),
        name="labeler-override",
    ),
    path("assignments/", api.AssignmentListApi.as_view(), name="assignment-list"),
    path("assignments/<int:assignment_id>/", api.AssignmentDetailApi.as_view(), name="assignment-detail"),
    path("assignments/<int:assignment_id>/skip/", api.AssignmentSkipApi.as_view(), name="assignment-skip"),
]
