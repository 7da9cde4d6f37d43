from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from frontend.views.accounts import PasswordResetView

api_v1: list[URLPattern | URLResolver] = [
    path("", include("annotation.urls")),  # first: it holds the labeling routes
    path("", include("quality.urls")),
    path("", include("labelers.urls")),
    path("", include("rlhf.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file: the docs page needs no inline script (CSP).
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("accounts/password_reset/", PasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("frontend.urls")),
]

handler400 = "config.exceptions.handler400"
handler404 = "config.exceptions.handler404"
handler500 = "config.exceptions.handler500"
