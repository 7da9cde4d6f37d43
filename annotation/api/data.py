"""A project's data for staff: prompts, response sets, rankings, comparisons, the preference export."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.api.pagination import paginate
from annotation.export import EXPORT_MODES, preferences_export_jsonl
from annotation.models import Split
from labelers.permissions import IsStaff


class PromptOutput(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    text = serializers.CharField()
    messages = serializers.JSONField(allow_null=True)
    split = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    n_responses = serializers.IntegerField()


class PromptListApi(APIView):
    pagination_class = LimitOffsetPagination  # see paginate
    permission_classes = [IsStaff]

    @extend_schema(responses=PromptOutput(many=True), parameters=[OpenApiParameter("split", str, enum=Split.values)])
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        qs = selectors.prompt_list(project=project, split=request.query_params.get("split"))
        return paginate(request, self, qs, PromptOutput)


class ResponseSetOutput(serializers.Serializer):
    id = serializers.IntegerField()
    prompt_id = serializers.IntegerField()
    prompt_external_id = serializers.CharField(source="prompt.external_id")
    status = serializers.CharField()
    required_count = serializers.IntegerField()
    submitted_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class ResponseSetListApi(APIView):
    pagination_class = LimitOffsetPagination  # see paginate
    permission_classes = [IsStaff]

    @extend_schema(responses=ResponseSetOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        qs = selectors.response_set_list(project=project, status=request.query_params.get("status"))
        return paginate(request, self, qs, ResponseSetOutput)


class RankingOutput(serializers.Serializer):
    id = serializers.IntegerField()
    response_set_id = serializers.IntegerField()
    labeler = serializers.CharField(source="labeler.username")
    guideline_version = serializers.IntegerField(source="guideline.version", allow_null=True)
    ranks = serializers.DictField(child=serializers.IntegerField())
    display_order = serializers.ListField(child=serializers.IntegerField())
    pairwise_choice = serializers.CharField()
    scores = serializers.DictField(child=serializers.IntegerField())
    flags = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))
    comment = serializers.CharField()
    time_spent_ms = serializers.IntegerField()
    submitted_late = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class RankingListApi(APIView):
    pagination_class = LimitOffsetPagination  # see paginate
    permission_classes = [IsStaff]

    @extend_schema(responses=RankingOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        return paginate(request, self, selectors.ranking_list(project=project), RankingOutput)


class ComparisonOutput(serializers.Serializer):
    id = serializers.IntegerField()
    ranking_id = serializers.IntegerField()
    response_set_id = serializers.IntegerField()
    labeler = serializers.CharField(source="labeler.username")
    response_a = serializers.IntegerField(source="response_a_id")
    response_b = serializers.IntegerField(source="response_b_id")
    outcome = serializers.CharField()
    margin = serializers.IntegerField()
    both_bad = serializers.BooleanField()


class ComparisonListApi(APIView):
    pagination_class = LimitOffsetPagination  # see paginate
    permission_classes = [IsStaff]

    @extend_schema(responses=ComparisonOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        return paginate(request, self, selectors.comparison_list(project=project), ComparisonOutput)


class ExportApi(APIView):
    """Stream the preferences as JSONL in trl's format."""

    permission_classes = [IsStaff]

    class InputSerializer(serializers.Serializer):
        split = serializers.ChoiceField(choices=Split.choices, required=False)
        drop_ties = serializers.BooleanField(required=False, default=False)
        mode = serializers.ChoiceField(choices=EXPORT_MODES, required=False, default="annotator")

    @extend_schema(parameters=[InputSerializer], responses={(200, "application/jsonl"): OpenApiTypes.STR})
    def get(self, request: Request, project_id: int) -> StreamingHttpResponse:
        project = selectors.project_get(project_id=project_id)
        serializer = self.InputSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        lines = preferences_export_jsonl(project=project, **serializer.validated_data)
        response = StreamingHttpResponse(lines, content_type="application/jsonl; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="project-{project.pk}-preferences.jsonl"'
        return response
