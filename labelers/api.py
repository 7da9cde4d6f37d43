from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.exceptions import NotFound
from labelers.models import LabelerStatus, Role
from labelers.permissions import IsAdmin
from labelers.selectors import user_list, user_role
from labelers.services import user_create, user_update

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
    """Trade a username and password for an API token."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()

    @extend_schema(request=AuthTokenSerializer, responses=OutputSerializer)
    def post(self, request: Request) -> Response:
        # Django's request: the brute-force guard (django-axes) marks a locked-out login on it.
        serializer = AuthTokenSerializer(data=request.data, context={"request": request._request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        # A login like any other: last_login is set and the failed-login count is reset.
        user_logged_in.send(sender=type(user), request=request._request, user=user)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


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
        return Response(UserOutput(user_update(user=user, **serializer.validated_data)).data)
