from django.urls import path

from labelers import api

urlpatterns = [
    path("auth/token/", api.TokenObtainApi.as_view(), name="token-obtain"),
    path("auth/tokens/", api.TokenListApi.as_view(), name="token-list"),
    path("auth/tokens/<int:token_id>/", api.TokenRevokeApi.as_view(), name="token-revoke"),
    path("auth/logout/", api.LogoutApi.as_view(), name="logout"),
    path("me/", api.MeApi.as_view(), name="me"),
    path("users/", api.UserListCreateApi.as_view(), name="user-list"),
    path("users/<int:user_id>/", api.UserUpdateApi.as_view(), name="user-update"),
]
