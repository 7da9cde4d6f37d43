"""The quality app's API paths: under a project's, like annotation.urls (config/urls.py includes both)."""

from django.urls import path

from quality import api

urlpatterns = [
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
]
