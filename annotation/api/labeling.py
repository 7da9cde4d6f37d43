"""Labeling: lease the next item, see it again, submit a ranking, skip, progress."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import rules, selectors, services
from annotation.api.pagination import paginate
from annotation.models import PairwiseChoice
from labelers.permissions import IsLabeler


class ResponseForLabeler(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()


class AssignmentOutput(serializers.Serializer):
    """The shape of ``assignment_body`` (for the schema; the body itself is built by hand)."""

    id = serializers.IntegerField()
    project_id = serializers.IntegerField(source="response_set.project_id")
    response_set_id = serializers.IntegerField()
    status = serializers.CharField()
    leased_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    guideline_version = serializers.IntegerField(source="guideline.version", allow_null=True)
    prompt = serializers.SerializerMethodField()
    responses = ResponseForLabeler(many=True, source="shown_responses")

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_prompt(self, assignment: Any) -> dict[str, Any]:
        prompt = assignment.response_set.prompt
        return {"text": prompt.text, "messages": prompt.messages, "tags": prompt.tags}


_DATETIME = serializers.DateTimeField()


def assignment_body(assignment: Any) -> dict[str, Any]:
    """An assignment as a labeler's client sees it: ``AssignmentOutput``'s fields, built directly
    (a lease is the API's hottest read and a serializer costs more than the rest of it)."""
    response_set = assignment.response_set
    prompt = response_set.prompt
    guideline = assignment.guideline
    return {
        "id": assignment.pk,
        "project_id": response_set.project_id,
        "response_set_id": assignment.response_set_id,
        "status": assignment.status,
        "leased_at": _DATETIME.to_representation(assignment.leased_at),
        "expires_at": _DATETIME.to_representation(assignment.expires_at),
        "guideline_version": guideline.version if guideline is not None else None,
        "prompt": {"text": prompt.text, "messages": prompt.messages, "tags": prompt.tags},
        "responses": [
            {"id": response.pk, "text": response.text}
            for response in selectors.assignment_responses(assignment=assignment)
        ],
    }


class LeaseNextApi(APIView):
    """Lease the next item: 200 with the assignment, or 204 when no work is left."""

    permission_classes = [IsLabeler]
    renderer_classes = [JSONRenderer]  # JSON only: the browsable API's HTML page costs every lease

    @extend_schema(request=None, responses={200: AssignmentOutput, 204: None})
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        assignment = services.assignment_lease_next(project=project, labeler=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(assignment_body(assignment))


class LabelerProgressApi(APIView):
    permission_classes = [IsLabeler]

    @extend_schema(
        responses=inline_serializer(
            "LabelerProgress",
            {
                "done_today": serializers.IntegerField(),
                "done_total": serializers.IntegerField(),
                "left": serializers.IntegerField(),
            },
        )
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        return Response(selectors.labeler_progress(project=project, labeler=request.user))


class AssignmentListApi(APIView):
    pagination_class = LimitOffsetPagination  # see paginate
    permission_classes = [IsLabeler]

    class ListOutput(serializers.Serializer):
        id = serializers.IntegerField()
        project_id = serializers.IntegerField(source="response_set.project_id")
        response_set_id = serializers.IntegerField()
        status = serializers.CharField()
        leased_at = serializers.DateTimeField()
        expires_at = serializers.DateTimeField()

    @extend_schema(responses=ListOutput(many=True))
    def get(self, request: Request) -> Response:
        return paginate(request, self, selectors.assignment_list(labeler=request.user), self.ListOutput)


class AssignmentDetailApi(APIView):
    permission_classes = [IsLabeler]

    @extend_schema(responses=AssignmentOutput)
    def get(self, request: Request, assignment_id: int) -> Response:
        assignment = selectors.assignment_get(assignment_id=assignment_id, labeler=request.user)
        return Response(assignment_body(assignment))


class RankingSubmitApi(APIView):
    """Submit a ranking. Repeating a request with the same ``idempotency_key`` returns the first."""

    permission_classes = [IsLabeler]
    renderer_classes = [JSONRenderer]

    class InputSerializer(serializers.Serializer):
        """The body's shape, for the schema. ``ranking_submit`` checks every field itself (each
        labeler's every item comes through here; a serializer would cost a third of the request)."""

        idempotency_key = serializers.CharField(max_length=100)
        ranks = serializers.JSONField(required=False, help_text='{"<response id>": rank}; ties share a rank.')
        choice = serializers.ChoiceField(choices=PairwiseChoice.choices, required=False)
        scores = serializers.JSONField(required=False, help_text='{"<response id>": 1..7}')
        flags = serializers.JSONField(required=False, help_text='{"<response id>": ["hallucination", ...]}')
        comment = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")
        time_spent_ms = serializers.IntegerField(required=False, min_value=0, default=0)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        assignment_id = serializers.IntegerField()
        ranks = serializers.DictField(child=serializers.IntegerField())
        comparisons = serializers.IntegerField()
        created = serializers.BooleanField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer, 200: OutputSerializer})
    def post(self, request: Request, assignment_id: int) -> Response:
        ranking, created = services.ranking_submit(
            assignment_id=assignment_id, labeler=request.user, **services.ranking_submit_input(request.data)
        )
        body = {
            "id": ranking.pk,
            "assignment_id": ranking.assignment_id,
            "ranks": ranking.ranks,
            "comparisons": rules.pair_count(len(ranking.ranks)),
            "created": created,
        }
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class AssignmentSkipApi(APIView):
    permission_classes = [IsLabeler]

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=1000)

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer("Skipped", {"id": serializers.IntegerField(), "status": serializers.CharField()}),
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        assignment = services.assignment_skip(
            assignment_id=assignment_id, labeler=request.user, **serializer.validated_data
        )
        return Response({"id": assignment.pk, "status": assignment.status})
