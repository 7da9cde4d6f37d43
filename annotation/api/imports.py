"""Imports of prompts and responses: small files in the request, large ones as a background job."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors, services
from annotation.models import ImportJob
from annotation.services.import_jobs import import_job_create, import_runs_in_background
from config.exceptions import ApplicationError, NotFound
from config.jsonsafe import BoundedJSONParser
from labelers.permissions import IsAdmin


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
