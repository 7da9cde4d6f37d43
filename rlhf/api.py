from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.selectors import project_get
from labelers.permissions import IsStaff
from rlhf.models import ModelKind, ModelVersion
from rlhf.services import model_version_register


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
    created_at = serializers.DateTimeField()


class ModelVersionListCreateApi(APIView):
    permission_classes = [IsStaff]

    class InputSerializer(serializers.Serializer):
        project_id = serializers.IntegerField(required=False, allow_null=True)
        kind = serializers.ChoiceField(choices=ModelKind.choices)
        name = serializers.CharField(max_length=200)
        path = serializers.CharField(max_length=1000)
        parent_id = serializers.IntegerField(required=False, allow_null=True)
        notes = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(responses=ModelVersionOutput(many=True))
    def get(self, request: Request) -> Response:
        qs = ModelVersion.objects.all()
        if project_id := request.query_params.get("project"):
            qs = qs.filter(project_id=project_id) if project_id.isdigit() else qs.none()
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
        version = model_version_register(project=project, parent=parent, **data)
        return Response(ModelVersionOutput(version).data, status=status.HTTP_201_CREATED)
