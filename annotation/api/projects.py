"""Projects and their guidelines."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import rules, selectors, services
from annotation.api.pagination import paginate
from annotation.models import TaskMode
from config.exceptions import ApplicationError
from labelers.models import Role
from labelers.permissions import HasAnyRole, IsAdmin, IsStaff
from labelers.selectors import user_role


class FlagSerializer(serializers.Serializer):
    key = serializers.RegexField(rules.FLAG_KEY_PATTERN)  # type: ignore[assignment]
    label = serializers.CharField(max_length=200, required=False)  # type: ignore[assignment]


class ProjectOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    k = serializers.IntegerField()
    task_mode = serializers.CharField()
    overlap = serializers.IntegerField()
    lease_minutes = serializers.IntegerField()
    flags = FlagSerializer(many=True)
    require_likert = serializers.BooleanField()
    is_active = serializers.BooleanField()
    gold_rate = serializers.FloatField()
    qualification_items = serializers.IntegerField()
    qualification_threshold = serializers.FloatField()
    reliability_threshold = serializers.FloatField()
    reliability_min_labels = serializers.IntegerField()
    review_kendall_w = serializers.FloatField()
    current_guideline_version = serializers.IntegerField(source="current_guideline.version", allow_null=True)
    created_at = serializers.DateTimeField()


class ProjectInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    k = serializers.IntegerField(min_value=rules.K_MIN, max_value=rules.K_MAX, required=False)
    task_mode = serializers.ChoiceField(choices=TaskMode.choices, required=False)
    overlap = serializers.IntegerField(min_value=rules.OVERLAP_MIN, max_value=rules.OVERLAP_MAX, required=False)
    lease_minutes = serializers.IntegerField(
        min_value=rules.LEASE_MINUTES_MIN, max_value=rules.LEASE_MINUTES_MAX, required=False
    )
    flags = FlagSerializer(many=True, required=False)
    require_likert = serializers.BooleanField(required=False)
    is_active = serializers.BooleanField(required=False)
    gold_rate = serializers.FloatField(min_value=rules.SHARE_MIN, max_value=rules.SHARE_MAX, required=False)
    qualification_items = serializers.IntegerField(
        min_value=rules.QUALIFICATION_ITEMS_MIN, max_value=rules.QUALIFICATION_ITEMS_MAX, required=False
    )
    qualification_threshold = serializers.FloatField(
        min_value=rules.SHARE_MIN, max_value=rules.SHARE_MAX, required=False
    )
    reliability_threshold = serializers.FloatField(min_value=rules.SHARE_MIN, max_value=rules.SHARE_MAX, required=False)
    reliability_min_labels = serializers.IntegerField(min_value=rules.RELIABILITY_MIN_LABELS_MIN, required=False)
    review_kendall_w = serializers.FloatField(min_value=rules.SHARE_MIN, max_value=rules.SHARE_MAX, required=False)
    guideline = serializers.CharField(required=False, allow_blank=True, help_text="Published as version 1.")


class ProjectListCreateApi(APIView):
    pagination_class = LimitOffsetPagination  # see paginate

    def get_permissions(self) -> list[Any]:
        return [IsAdmin()] if self.request.method == "POST" else [HasAnyRole()]

    @extend_schema(responses=ProjectOutput(many=True))
    def get(self, request: Request) -> Response:
        labeler = user_role(user=request.user) == Role.LABELER
        return paginate(request, self, selectors.project_list(active_only=labeler), ProjectOutput)

    @extend_schema(request=ProjectInput, responses={201: ProjectOutput})
    def post(self, request: Request) -> Response:
        serializer = ProjectInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = services.project_create(created_by=request.user, **serializer.validated_data)
        return Response(ProjectOutput(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    def get_permissions(self) -> list[Any]:
        return [IsAdmin()] if self.request.method == "PATCH" else [HasAnyRole()]

    @extend_schema(responses=ProjectOutput)
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_visible(project_id=project_id, user=request.user)
        return Response(ProjectOutput(project).data)

    @extend_schema(request=ProjectInput, responses=ProjectOutput)
    def patch(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        serializer = ProjectInput(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if "guideline" in data:
            raise ApplicationError("guideline: publish a new version through the guidelines endpoint.", code="invalid")
        project = services.project_update(project=project, **data)
        return Response(ProjectOutput(project).data)


class ProjectStatsApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        return Response(selectors.project_stats(project=project))


class GuidelineOutput(serializers.Serializer):
    version = serializers.IntegerField()
    body = serializers.CharField()
    note = serializers.CharField()
    published_by = serializers.CharField(source="published_by.username", allow_null=True)
    published_at = serializers.DateTimeField()


class GuidelineListPublishApi(APIView):
    class InputSerializer(serializers.Serializer):
        body = serializers.CharField(max_length=200_000, trim_whitespace=False)
        note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    def get_permissions(self) -> list[Any]:
        return [IsAdmin()] if self.request.method == "POST" else [HasAnyRole()]

    @extend_schema(responses=GuidelineOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_visible(project_id=project_id, user=request.user)
        return Response(GuidelineOutput(selectors.guideline_list(project=project), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: GuidelineOutput})
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        guideline = services.guideline_publish(project=project, published_by=request.user, **serializer.validated_data)
        return Response(GuidelineOutput(guideline).data, status=status.HTTP_201_CREATED)


class GuidelineDetailApi(APIView):
    permission_classes = [HasAnyRole]

    @extend_schema(responses=GuidelineOutput)
    def get(self, request: Request, project_id: int, version: int) -> Response:
        project = selectors.project_get_visible(project_id=project_id, user=request.user)
        return Response(GuidelineOutput(selectors.guideline_get(project=project, version=version)).data)


class GuidelineAcknowledgeApi(APIView):
    permission_classes = [HasAnyRole]

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "Acknowledgement", {"version": serializers.IntegerField(), "acknowledged_at": serializers.DateTimeField()}
        ),
    )
    def post(self, request: Request, project_id: int, version: int) -> Response:
        project = selectors.project_get_visible(project_id=project_id, user=request.user)
        guideline = selectors.guideline_get(project=project, version=version)
        ack = services.guideline_acknowledge(guideline=guideline, user=request.user)
        return Response({"version": guideline.version, "acknowledged_at": ack.acknowledged_at})
