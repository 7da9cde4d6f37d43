from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.exceptions import ApplicationError, NotFound
from labelers.models import ApiToken, LabelerStatus, Role
from labelers.permissions import IsAdmin
from labelers.selectors import api_token_list, user_list, user_role
from labelers.services import user_create, user_update
from labelers.tokens import api_token_create, api_token_revoke

User = get_user_model()


class UserOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()
    role = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    status_reason = serializers.SerializerMethodField()

    def get_role(self, user: object) -> str | None:
        return user_role(user=user)  # type: ignore[arg-type]

    def get_status(self, user: object) -> str | None:
        profile = getattr(user, "profile", None)
        return profile.status if profile else None

    def get_status_reason(self, user: object) -> str:
        profile = getattr(user, "profile", None)
        return profile.status_reason if profile else ""


class TokenObtainApi(APIView):
    """Trade a username and password for a new API token (its secret is shown this once)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    class InputSerializer(AuthTokenSerializer):
        name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def post(self, request: Request) -> Response:
        # Django's request: the brute-force guard (django-axes) marks a locked-out login on it.
        serializer = self.InputSerializer(data=request.data, context={"request": request._request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        # A login like any other: last_login is set and the failed-login count is reset.
        user_logged_in.send(sender=type(user), request=request._request, user=user)
        _, secret = api_token_create(user=user, name=serializer.validated_data["name"])
        return Response({"token": secret})


class TokenListApi(APIView):
    """The caller's tokens that still work; never their secrets."""

    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        prefix = serializers.CharField()
        name = serializers.CharField()
        created_at = serializers.DateTimeField()
        expires_at = serializers.DateTimeField()
        last_used_at = serializers.DateTimeField(allow_null=True)
        current = serializers.SerializerMethodField(help_text="Whether this request was made with it.")

        def get_current(self, token: ApiToken) -> bool:
            return token.pk == self.context["current_id"]

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        current_id = request.auth.pk if isinstance(request.auth, ApiToken) else None
        tokens = api_token_list(user=request.user)
        return Response(self.OutputSerializer(tokens, many=True, context={"current_id": current_id}).data)


class TokenRevokeApi(APIView):
    """Revoke one of the caller's tokens."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: None})
    def delete(self, request: Request, token_id: int) -> Response:
        if not api_token_revoke(user=request.user, token_id=token_id):
            raise NotFound(f"Token {token_id} not found.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutApi(APIView):
    """Revoke the token this request was made with."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        if not isinstance(request.auth, ApiToken):
            raise ApplicationError("This request was not made with an API token.", code="no_token")
        api_token_revoke(user=request.user, token_id=request.auth.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=UserOutput)
    def get(self, request: Request) -> Response:
        return Response(UserOutput(request.user).data)


class UserListCreateApi(APIView):
    permission_classes = [IsAdmin]

    class InputSerializer(serializers.Serializer):
        username = serializers.RegexField(r"^[\w.@+-]{1,150}$")
        password = serializers.CharField(min_length=8, required=False, allow_blank=False, write_only=True)
        email = serializers.EmailField(required=False, allow_blank=True, default="")
        role = serializers.ChoiceField(choices=Role.choices, default=Role.LABELER)

    @extend_schema(responses=UserOutput(many=True))
    def get(self, request: Request) -> Response:
        role = request.query_params.get("role")
        return Response(UserOutput(user_list(role=role), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: UserOutput})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = user_create(**serializer.validated_data)
        return Response(UserOutput(user).data, status=status.HTTP_201_CREATED)


class UserUpdateApi(APIView):
    permission_classes = [IsAdmin]

    class InputSerializer(serializers.Serializer):
        role = serializers.ChoiceField(choices=Role.choices, required=False)
        status = serializers.ChoiceField(choices=LabelerStatus.choices, required=False)
        status_reason = serializers.CharField(required=False, allow_blank=True, max_length=500)

    @extend_schema(request=InputSerializer, responses=UserOutput)
    def patch(self, request: Request, user_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = User.objects.select_related("profile").filter(pk=user_id).first()
        if user is None:
            raise NotFound(f"User {user_id} not found.")
        return Response(UserOutput(user_update(user=user, actor=request.user, **serializer.validated_data)).data)
