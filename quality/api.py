"""REST API of the quality app: the agreement report, gold sets, review decisions, overrides.

Validate input -> one service or selector -> serialize output. The paths sit under the project's
(``quality.urls``, included next to ``annotation.urls``).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.models import Ranking, ResponseSet
from config.exceptions import ApplicationError, Conflict, NotFound
from labelers.permissions import IsAdmin, IsStaff
from quality import services
from quality.selectors import CSV_TABLES, agreement_report_latest, agreement_table_csv
from quality.tasks import agreement_refresh


class AgreementApi(APIView):
    """The stored agreement report and how fresh it is (computed by a worker, never per request)."""

    permission_classes = [IsStaff]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        return Response(agreement_report_latest(project=project).to_json())


class AgreementRefreshApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        result = agreement_refresh.delay(project.pk, True)
        return Response({"status": "queued", "task_id": result.id}, status=status.HTTP_202_ACCEPTED)


class AgreementCsvApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request, project_id: int, table: str) -> HttpResponse:
        project = selectors.project_get(project_id=project_id)
        if table not in CSV_TABLES:
            raise ApplicationError(
                f"must be one of {', '.join(CSV_TABLES)}, got {table!r}.", field="table", code="invalid"
            )
        latest = agreement_report_latest(project=project)
        if latest.report is None:
            raise Conflict("The agreement report has not been computed yet.", code="report_missing")
        response = HttpResponse(agreement_table_csv(report=latest.report, table=table), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="project-{project.pk}-{table}.csv"'
        return response


def _project_set(project_id: int, set_id: int) -> ResponseSet:
    response_set = ResponseSet.objects.select_related("project").filter(pk=set_id, project_id=project_id).first()
    if response_set is None:
        raise NotFound(f"Response set {set_id} not found in project {project_id}.")
    return response_set


class GoldApi(APIView):
    """Make a response set gold: with a reference ranking, or with its confident consensus."""

    permission_classes = [IsAdmin]

    class InputSerializer(serializers.Serializer):
        ranks = serializers.JSONField(required=False, help_text='{"<response id>": rank}; omit to use the consensus')

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "Gold", {"response_set_id": serializers.IntegerField(), "gold_ranks": serializers.JSONField()}
        ),
    )
    def post(self, request: Request, project_id: int, set_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        response_set = services.response_set_make_gold(
            response_set=_project_set(project_id, set_id),
            ranks=serializer.validated_data.get("ranks"),
            actor=request.user,
        )
        return Response({"response_set_id": response_set.pk, "gold_ranks": response_set.gold_ranks})


class ReviewAcceptApi(APIView):
    permission_classes = [IsAdmin]

    class InputSerializer(serializers.Serializer):
        ranking_id = serializers.IntegerField()

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "Consensus",
            {
                "response_set_id": serializers.IntegerField(),
                "ranks": serializers.JSONField(),
                "source": serializers.CharField(),
            },
        ),
    )
    def post(self, request: Request, project_id: int, set_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        response_set = _project_set(project_id, set_id)
        ranking = Ranking.objects.filter(pk=serializer.validated_data["ranking_id"]).first()
        if ranking is None:
            raise ApplicationError(
                f"ranking {serializer.validated_data['ranking_id']} not found.", field="ranking_id", code="invalid"
            )
        consensus = services.review_accept(response_set=response_set, ranking=ranking, actor=request.user)
        return Response({"response_set_id": response_set.pk, "ranks": consensus.ranks, "source": consensus.source})


class ReviewMoreLabelsApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "MoreLabels",
            {
                "response_set_id": serializers.IntegerField(),
                "required_count": serializers.IntegerField(),
                "status": serializers.CharField(),
            },
        ),
    )
    def post(self, request: Request, project_id: int, set_id: int) -> Response:
        response_set = services.review_request_more_labels(response_set=_project_set(project_id, set_id))
        return Response(
            {
                "response_set_id": response_set.pk,
                "required_count": response_set.required_count,
                "status": response_set.status,
            }
        )


class LabelerOverrideApi(APIView):
    permission_classes = [IsAdmin]

    class InputSerializer(serializers.Serializer):
        override = serializers.BooleanField()

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "Override", {"labeler_id": serializers.IntegerField(), "override": serializers.BooleanField()}
        ),
    )
    def post(self, request: Request, project_id: int, user_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = selectors.project_get(project_id=project_id)
        user = get_user_model().objects.select_related("profile").filter(pk=user_id).first()
        if user is None:
            raise NotFound(f"User {user_id} not found.")
        quality = services.labeler_quality_override(
            project=project, labeler=user, actor=request.user, **serializer.validated_data
        )
        return Response({"labeler_id": user.pk, "override": quality.override})
