"""REST API of the annotation app: validate input -> one service or selector -> serialize output."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import rules, selectors, services
from annotation.export import EXPORT_MODES, preferences_export_jsonl
from annotation.models import ImportJob, PairwiseChoice, Split, TaskMode
from annotation.quality import services as quality_services
from annotation.quality.selectors import CSV_TABLES, agreement_report_latest, agreement_table_csv
from annotation.services.import_jobs import import_job_create, import_runs_in_background
from config.exceptions import ApplicationError, Conflict, NotFound
from config.jsonsafe import BoundedJSONParser
from labelers.models import Role
from labelers.permissions import HasAnyRole, IsAdmin, IsLabeler, IsStaff
from labelers.selectors import user_role


def _paginate(request: Request, view: APIView, queryset: Any, serializer: type[serializers.Serializer]) -> Response:
    """One page (limit / offset) of a list view; the view names LimitOffsetPagination as its
    pagination_class, which is also how the schema documents the page and its parameters."""
    paginator = LimitOffsetPagination()
    page: Any = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


# --- projects -------------------------------------------------------------------------------------


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
    pagination_class = LimitOffsetPagination  # see _paginate

    def get_permissions(self) -> list[Any]:
        return [IsAdmin()] if self.request.method == "POST" else [HasAnyRole()]

    @extend_schema(responses=ProjectOutput(many=True))
    def get(self, request: Request) -> Response:
        labeler = user_role(user=request.user) == Role.LABELER
        return _paginate(request, self, selectors.project_list(active_only=labeler), ProjectOutput)

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


# --- guidelines -----------------------------------------------------------------------------------


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


# --- data: import, prompts, sets, rankings, comparisons, export -----------------------------------


class ImportJobOutput(serializers.ModelSerializer):
    class Meta:
        model = ImportJob
        fields = [
            "id",
            "project",
            "status",
            "file_name",
            "size",
            "rows_checked",
            "summary",
            "detail",
            "errors",
            "created_at",
            "finished_at",
        ]


class ImportApi(APIView):
    """Upload JSONL or CSV as multipart ``file``; the format from the ``format`` field, ``?format=``
    or the file's name."""

    permission_classes = [IsAdmin]
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    @extend_schema(
        request={
            "multipart/form-data": inline_serializer(
                "ImportUpload",
                {
                    "file": serializers.FileField(),
                    "format": serializers.ChoiceField(choices=["jsonl", "csv"], required=False),
                },
            )
        },
        responses={
            202: ImportJobOutput,
            201: inline_serializer(
                "ImportSummary",
                {
                    "prompts": serializers.IntegerField(),
                    "responses": serializers.IntegerField(),
                    "response_sets": serializers.IntegerField(),
                },
            ),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        upload = request.FILES.get("file")
        if upload is None:
            raise ApplicationError("file: upload a JSONL or CSV file in the 'file' field.", code="invalid")
        fmt = request.POST.get("format") or request.query_params.get("format")
        if not fmt:
            name = (upload.name or "").lower()
            fmt = "csv" if name.endswith(".csv") else "jsonl" if name.endswith((".jsonl", ".json", ".ndjson")) else ""
        if not fmt:
            raise ApplicationError("format: give 'jsonl' or 'csv' (the file name does not say).", code="invalid")
        if import_runs_in_background(upload.size or 0):
            job = import_job_create(
                project=project,
                content=upload.read(),
                fmt=str(fmt),
                file_name=upload.name or "",
                created_by=request.user,
            )
            return Response(ImportJobOutput(job).data, status=status.HTTP_202_ACCEPTED)
        summary = services.prompts_import(project=project, content=upload.read(), fmt=str(fmt))
        return Response(
            {"prompts": summary.prompts, "responses": summary.responses, "response_sets": summary.response_sets},
            status=status.HTTP_201_CREATED,
        )


class ImportJobApi(APIView):
    """A background import (a file over IMPORT_SYNC_MAX_BYTES): poll until succeeded or failed."""

    permission_classes = [IsAdmin]

    @extend_schema(responses=ImportJobOutput)
    def get(self, request: Request, job_id: int) -> Response:
        job = ImportJob.objects.filter(pk=job_id).first()
        if job is None:
            raise NotFound(f"No import job {job_id}.")
        return Response(ImportJobOutput(job).data)


class PromptOutput(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    text = serializers.CharField()
    messages = serializers.JSONField(allow_null=True)
    split = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    n_responses = serializers.IntegerField()


class PromptListApi(APIView):
    pagination_class = LimitOffsetPagination  # see _paginate
    permission_classes = [IsStaff]

    @extend_schema(responses=PromptOutput(many=True), parameters=[OpenApiParameter("split", str, enum=Split.values)])
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        qs = selectors.prompt_list(project=project, split=request.query_params.get("split"))
        return _paginate(request, self, qs, PromptOutput)


class ResponseSetOutput(serializers.Serializer):
    id = serializers.IntegerField()
    prompt_id = serializers.IntegerField()
    prompt_external_id = serializers.CharField(source="prompt.external_id")
    status = serializers.CharField()
    required_count = serializers.IntegerField()
    submitted_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class ResponseSetListApi(APIView):
    pagination_class = LimitOffsetPagination  # see _paginate
    permission_classes = [IsStaff]

    @extend_schema(responses=ResponseSetOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        qs = selectors.response_set_list(project=project, status=request.query_params.get("status"))
        return _paginate(request, self, qs, ResponseSetOutput)


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
    pagination_class = LimitOffsetPagination  # see _paginate
    permission_classes = [IsStaff]

    @extend_schema(responses=RankingOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        return _paginate(request, self, selectors.ranking_list(project=project), RankingOutput)


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
    pagination_class = LimitOffsetPagination  # see _paginate
    permission_classes = [IsStaff]

    @extend_schema(responses=ComparisonOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        return _paginate(request, self, selectors.comparison_list(project=project), ComparisonOutput)


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


# --- labeling -------------------------------------------------------------------------------------


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
    pagination_class = LimitOffsetPagination  # see _paginate
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
        return _paginate(request, self, selectors.assignment_list(labeler=request.user), self.ListOutput)


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


# --- quality --------------------------------------------------------------------------------------


class AgreementApi(APIView):
    """The stored agreement report and how fresh it is (computed by a worker, never per request)."""

    permission_classes = [IsStaff]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        return Response(agreement_report_latest(project=project))


class AgreementRefreshApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get(project_id=project_id)
        from annotation.tasks import agreement_refresh

        result = agreement_refresh.delay(project.pk, True)
        return Response({"status": "queued", "task_id": result.id}, status=status.HTTP_202_ACCEPTED)


class AgreementCsvApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request, project_id: int, table: str) -> HttpResponse:
        project = selectors.project_get(project_id=project_id)
        if table not in CSV_TABLES:
            raise ApplicationError(f"table: must be one of {', '.join(CSV_TABLES)}, got {table!r}.", code="invalid")
        latest = agreement_report_latest(project=project)
        if latest["report"] is None:
            raise Conflict("The agreement report has not been computed yet.", code="report_missing")
        response = HttpResponse(agreement_table_csv(report=latest["report"], table=table), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="project-{project.pk}-{table}.csv"'
        return response


def _project_set(project_id: int, set_id: int) -> Any:
    from annotation.models import ResponseSet

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
        response_set = quality_services.response_set_make_gold(
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
        from annotation.models import Ranking

        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        response_set = _project_set(project_id, set_id)
        ranking = Ranking.objects.filter(pk=serializer.validated_data["ranking_id"]).first()
        if ranking is None:
            raise ApplicationError(
                f"ranking_id: ranking {serializer.validated_data['ranking_id']} not found.", code="invalid"
            )
        consensus = quality_services.review_accept(response_set=response_set, ranking=ranking, actor=request.user)
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
        response_set = quality_services.review_request_more_labels(response_set=_project_set(project_id, set_id))
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
        from django.contrib.auth import get_user_model

        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = selectors.project_get(project_id=project_id)
        user = get_user_model().objects.select_related("profile").filter(pk=user_id).first()
        if user is None:
            raise NotFound(f"User {user_id} not found.")
        quality = quality_services.labeler_quality_override(
            project=project, labeler=user, actor=request.user, **serializer.validated_data
        )
        return Response({"labeler_id": user.pk, "override": quality.override})
