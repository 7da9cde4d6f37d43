from django.urls import path

from rlhf import api

urlpatterns = [
    path("model-versions/", api.ModelVersionListCreateApi.as_view(), name="model-version-list"),
]
