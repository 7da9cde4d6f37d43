from __future__ import annotations

import csv
import io
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.params import parse_id
from annotation.selectors import project_get
from config.exceptions import ApplicationError
from labelers.permissions import IsAdmin, IsStaff
from rlhf.models import Evaluation, LoopSettings, ModelKind, ModelVersion, RunKind, TrainingRun
from rlhf.records import ModelMetrics, RunSummary
from rlhf.selectors import (
    evaluation_get,
    evaluation_list,
    evaluation_report,
    leaderboard,
    model_version_get,
    model_version_lineage,
    model_versions_compare,
    training_run_eta_seconds,
    training_run_get,
    training_run_list,
)
from rlhf.services.evaluations import evaluation_start
from rlhf.services.loop_settings import loop_settings_get, loop_settings_update
from rlhf.services.registry import model_version_promote, model_version_register, model_version_rollback
from rlhf.services.runs import training_run_cancel, training_run_start


class ModelVersionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    project_id = serializers.IntegerField(allow_null=True)
    kind = serializers.CharField()
    name = serializers.CharField()
    state = serializers.CharField()
    path = serializers.CharField()
    parent_id = serializers.IntegerField(allow_null=True)
    metrics = serializers.JSONField()
    notes = serializers.CharField()
    is_reference = serializers.BooleanField()
    run_id = serializers.IntegerField(allow_null=True)
    data_snapshot = serializers.JSONField()
    promoted_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    gate = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_gate(self, version: ModelVersion) -> dict[str, Any] | None:
        """The gate verdict of the run that made this version, as the records read it."""
        gate = ModelMetrics.from_json(version.kind, version.metrics).gate
        return gate.to_json() if gate is not None else None


class ModelVersionListCreateApi(APIView):
    permission_classes = [IsStaff]

    class InputSerializer(serializers.Serializer):
        project_id = serializers.IntegerField(required=False, allow_null=True)
        kind = serializers.ChoiceField(choices=ModelKind.choices)
        name = serializers.CharField(max_length=200)
        path = serializers.CharField(max_length=1000)
        parent_id = serializers.IntegerField(required=False, allow_null=True)
        notes = serializers.CharField(required=False, allow_blank=True, default="")
        is_reference = serializers.BooleanField(required=False, default=False)
        promote = serializers.BooleanField(required=False, default=False)

    @extend_schema(responses=ModelVersionOutput(many=True))
    def get(self, request: Request) -> Response:
        qs = ModelVersion.objects.all()
        if project := request.query_params.get("project"):
            project_id = parse_id(project)
            if project_id is None:
                raise serializers.ValidationError({"project": [f"expected a project id, got {project!r}"]})
            qs = qs.filter(project_id=project_id)
        return Response(ModelVersionOutput(qs, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: ModelVersionOutput})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(serializer.validated_data)
        project_id = data.pop("project_id", None)
        parent_id = data.pop("parent_id", None)
        project = project_get(project_id=project_id) if project_id is not None else None
        parent = None
        if parent_id is not None:
            parent = ModelVersion.objects.filter(pk=parent_id).first()
            if parent is None:
                raise serializers.ValidationError({"parent_id": [f"model version {parent_id} does not exist"]})
        version = model_version_register(project=project, parent=parent, actor=request.user, **data)
        return Response(ModelVersionOutput(version).data, status=status.HTTP_201_CREATED)


class TrainingRunOutput(serializers.Serializer):
    id = serializers.IntegerField()
    project_id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    trigger = serializers.CharField()
    config = serializers.JSONField()
    policy_id = serializers.IntegerField(allow_null=True)
    reference_id = serializers.IntegerField(allow_null=True)
    reward_model_id = serializers.IntegerField(allow_null=True)
    output_version_id = serializers.IntegerField(allow_null=True)
    data_snapshot = serializers.JSONField()
    progress_step = serializers.IntegerField()
    progress_total = serializers.IntegerField()
    eta_seconds = serializers.SerializerMethodField()
    summary = serializers.JSONField()
    gate = serializers.SerializerMethodField()
    error = serializers.CharField()
    log_tail = serializers.CharField()
    celery_task_id = serializers.CharField()
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_eta_seconds(self, run: TrainingRun) -> float | None:
        return training_run_eta_seconds(run=run)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_gate(self, run: TrainingRun) -> dict[str, Any] | None:
        """The run's gate verdict as the records read it (older stored shapes included)."""
        gate = RunSummary.from_json(run.kind, run.summary).gate
        return gate.to_json() if gate is not None else None


class TrainingRunListCreateApi(APIView):
    permission_classes = [IsStaff]

    class InputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=RunKind.choices)
        config = serializers.JSONField(required=False, default=dict)

    @extend_schema(responses=TrainingRunOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = project_get(project_id=project_id)
        runs = training_run_list(project=project, kind=request.query_params.get("kind"))[:200]
        return Response(TrainingRunOutput(runs, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: TrainingRunOutput})
    def post(self, request: Request, project_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = project_get(project_id=project_id)
        run = training_run_start(project=project, created_by=request.user, **serializer.validated_data)
        return Response(TrainingRunOutput(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(responses=TrainingRunOutput)
    def get(self, request: Request, run_id: int) -> Response:
        run = training_run_get(run_id=run_id)
        body = dict(TrainingRunOutput(run).data)
        body["metrics"] = run.metrics
        return Response(body)


class TrainingRunCancelApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(request=None, responses=TrainingRunOutput)
    def post(self, request: Request, run_id: int) -> Response:
        return Response(TrainingRunOutput(training_run_cancel(run=training_run_get(run_id=run_id))).data)


class ModelVersionPromoteApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(request=None, responses=ModelVersionOutput)
    def post(self, request: Request, version_id: int) -> Response:
        return Response(
            ModelVersionOutput(
                model_version_promote(version=model_version_get(version_id=version_id), actor=request.user)
            ).data
        )


class ModelVersionRollbackApi(APIView):
    permission_classes = [IsStaff]

    class InputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=ModelKind.choices)

    @extend_schema(request=InputSerializer, responses=ModelVersionOutput)
    def post(self, request: Request, project_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = model_version_rollback(
            project=project_get(project_id=project_id), kind=serializer.validated_data["kind"], actor=request.user
        )
        return Response(ModelVersionOutput(version).data)


class ModelVersionDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(responses=ModelVersionOutput)
    def get(self, request: Request, version_id: int) -> Response:
        version = model_version_get(version_id=version_id)
        body = dict(ModelVersionOutput(version).data)
        body["lineage"] = model_version_lineage(version=version)
        return Response(body)


class ModelVersionCompareApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(parameters=[OpenApiParameter("a", int), OpenApiParameter("b", int)], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        ids = []
        for name in ("a", "b"):
            version_id = parse_id(request.query_params.get(name, ""))
            if version_id is None:
                raise serializers.ValidationError({name: ["a model version id is required"]})
            ids.append(version_id)
        a, b = (model_version_get(version_id=i) for i in ids)
        return Response(model_versions_compare(a=a, b=b))


class LoopSettingsOutput(serializers.ModelSerializer):
    class Meta:
        model = LoopSettings
        fields = [
            "auto_chain",
            "retrain_min_comparisons",
            "reward_min_accuracy",
            "ppo_max_kl",
            "ppo_require_improvement",
            "generate_prompts",
            "reward_margin",
            "human_eval",
            "human_eval_prompts",
            "human_eval_min_votes",
            "human_eval_threshold",
            "human_eval_timeout_hours",
            "max_response_tokens",
            "sft_data_path",
            "reward_config",
            "ppo_config",
            "generation_config",
        ]


class LoopSettingsApi(APIView):
    """A project's loop settings: staff read them, admins change them (PATCH, any subset)."""

    class InputSerializer(serializers.Serializer):
        # Bounds are checked by loop_settings_update, which names the field.
        auto_chain = serializers.BooleanField(required=False)
        retrain_min_comparisons = serializers.IntegerField(required=False)
        reward_min_accuracy = serializers.FloatField(required=False)
        ppo_max_kl = serializers.FloatField(required=False)
        ppo_require_improvement = serializers.BooleanField(required=False)
        generate_prompts = serializers.IntegerField(required=False)
        reward_margin = serializers.FloatField(required=False)
        human_eval = serializers.BooleanField(required=False)
        human_eval_prompts = serializers.IntegerField(required=False)
        human_eval_min_votes = serializers.IntegerField(required=False)
        human_eval_threshold = serializers.FloatField(required=False)
        human_eval_timeout_hours = serializers.IntegerField(required=False)
        max_response_tokens = serializers.IntegerField(required=False)
        sft_data_path = serializers.CharField(required=False, allow_blank=True, max_length=1000)
        reward_config = serializers.JSONField(required=False)
        ppo_config = serializers.JSONField(required=False)
        generation_config = serializers.JSONField(required=False)

    def get_permissions(self) -> list[Any]:
        return [IsAdmin()] if self.request.method == "PATCH" else [IsStaff()]

    @extend_schema(responses=LoopSettingsOutput)
    def get(self, request: Request, project_id: int) -> Response:
        loop = loop_settings_get(project=project_get(project_id=project_id))
        return Response(LoopSettingsOutput(loop).data)

    @extend_schema(request=InputSerializer, responses=LoopSettingsOutput)
    def patch(self, request: Request, project_id: int) -> Response:
        unknown = sorted(set(request.data) - set(self.InputSerializer().fields))
        if unknown:
            raise ApplicationError(f"{unknown[0]}: unknown loop setting.", code="invalid")
        serializer = self.InputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        loop = loop_settings_update(project=project_get(project_id=project_id), **serializer.validated_data)
        return Response(LoopSettingsOutput(loop).data)


class EvaluationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    project_id = serializers.IntegerField()
    candidate_id = serializers.IntegerField()
    candidate = serializers.CharField(source="candidate.name")
    baseline_id = serializers.IntegerField()
    baseline = serializers.CharField(source="baseline.name")
    status = serializers.CharField()
    run_id = serializers.IntegerField(allow_null=True)
    gated_run_id = serializers.IntegerField(allow_null=True)
    prompts = serializers.IntegerField()
    min_votes = serializers.IntegerField()
    threshold = serializers.FloatField()
    timeout_hours = serializers.IntegerField()
    deadline = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    report = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_report(self, evaluation: Evaluation) -> dict[str, Any] | None:
        """The verdict with its figures (live while votes arrive): the gate, per-tag win rates, samples."""
        if evaluation.status == "generating" or (not evaluation.is_open and "gate" not in evaluation.verdict):
            return None
        return evaluation_report(evaluation=evaluation).to_json()


class EvaluationListCreateApi(APIView):
    """A project's human evaluations; POST starts one (the baseline defaults to the promoted policy)."""

    permission_classes = [IsStaff]

    class InputSerializer(serializers.Serializer):
        candidate = serializers.IntegerField(help_text="The model version id of the candidate policy.")
        baseline = serializers.IntegerField(
            required=False, allow_null=True, help_text="The baseline policy; default: the promoted one."
        )

    @extend_schema(responses=EvaluationOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        evaluations = evaluation_list(project=project_get(project_id=project_id))[:100]
        return Response(EvaluationOutput(evaluations, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: EvaluationOutput})
    def post(self, request: Request, project_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = project_get(project_id=project_id)
        versions = {}
        for name in ("candidate", "baseline"):
            version_id = serializer.validated_data.get(name)
            if version_id is None:
                continue
            version = ModelVersion.objects.filter(pk=version_id).first()
            if version is None:
                raise ApplicationError(f"model version {version_id} not found.", code="invalid", field=name)
            versions[name] = version
        evaluation = evaluation_start(
            project=project, candidate=versions["candidate"], baseline=versions.get("baseline"), actor=request.user
        )
        return Response(EvaluationOutput(evaluation).data, status=status.HTTP_201_CREATED)


class EvaluationDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(responses=EvaluationOutput)
    def get(self, request: Request, evaluation_id: int) -> Response:
        return Response(EvaluationOutput(evaluation_get(evaluation_id=evaluation_id)).data)


class LeaderboardRowOutput(serializers.Serializer):
    version_id = serializers.IntegerField()
    group = serializers.IntegerField(help_text="Versions joined by votes; ratings compare only within a group.")
    name = serializers.CharField()
    state = serializers.CharField()
    rating = serializers.FloatField()
    ci95_low = serializers.FloatField(allow_null=True)
    ci95_high = serializers.FloatField(allow_null=True)
    votes = serializers.IntegerField()
    win_rate = serializers.FloatField(allow_null=True)


LEADERBOARD_COLUMNS = list(LeaderboardRowOutput().fields)


class LeaderboardApi(APIView):
    """Bradley-Terry ratings (Elo scale, mean 1000) of every model version human evaluations
    compared, from all their votes, with 95% bootstrap intervals over prompts."""

    permission_classes = [IsStaff]

    @extend_schema(responses=LeaderboardRowOutput(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        rows = leaderboard(project=project_get(project_id=project_id))
        return Response([row.to_json() for row in rows])


class LeaderboardCsvApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request, project_id: int) -> HttpResponse:
        project = project_get(project_id=project_id)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=LEADERBOARD_COLUMNS)
        writer.writeheader()
        writer.writerows(row.to_json() for row in leaderboard(project=project))
        response = HttpResponse(out.getvalue(), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="project-{project.pk}-leaderboard.csv"'
        return response
