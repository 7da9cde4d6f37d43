"""Input that used to crash the server: deep JSON, huge bodies, NaN; errors under /api/ in JSON; debug
off and a real secret key unless asked otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from tests.factories import ProjectFactory

ROOT = Path(__file__).resolve().parent.parent
DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (DEEP, "JSON parse error - nested deeper than 32 levels"),
        ("[" * 33 + "]" * 33, "JSON parse error - nested deeper than 32 levels"),
        ('{"username": NaN}', "JSON parse error - NaN is not a JSON number"),
        ('{"username": -Infinity}', "JSON parse error - -Infinity is not a JSON number"),
        ('{"username": 1e400}', "JSON parse error - the number 1e400 is out of range"),
        ('{"username": ', "JSON parse error - Expecting value at line 1 column 14"),
    ],
)
def test_bad_json_is_a_400_for_anyone(body, message):
    response = Client().post("/api/v1/auth/token/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": message, "code": "parse_error"}


@pytest.mark.django_db
def test_32_levels_are_accepted():
    nested = "[" * 31 + "]" * 31  # inside the body's object: 32 levels
    response = Client().post("/api/v1/auth/token/", f'{{"username": {nested}}}', content_type="application/json")
    assert response.status_code == 400  # parsed; the serializer then names the field
    assert response.json()["detail"].startswith("username: ")


@pytest.mark.django_db
def test_deep_json_to_the_submit_endpoints(client_for, labeler):
    api = client_for(labeler).post("/api/v1/assignments/1/submit/", DEEP, content_type="application/json")
    assert (api.status_code, api.json()["detail"]) == (400, "JSON parse error - nested deeper than 32 levels")
    browser = Client()
    browser.force_login(labeler)
    page = browser.post("/work/assignments/1/submit/", DEEP, content_type="application/json")
    assert page.status_code == 400
    assert page.json()["detail"] == "The request body is not valid JSON: nested deeper than 32 levels."


@pytest.mark.django_db
def test_a_body_over_the_limit_is_a_413_before_it_is_read(settings, admin_user, client_for):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000_000
    project = ProjectFactory()
    big = b"x" * 1_500_000
    upload = client_for(admin_user).post(
        f"/api/v1/projects/{project.pk}/import/",
        {"file": ("prompts.jsonl", big)},
        format="multipart",
    )
    assert upload.status_code == 413
    assert upload.json() == {
        "detail": "The request body is 1.5 MB; at most 1.0 MB is accepted.",
        "code": "too_large",
    }
    assert project.prompts.count() == 0
    body = Client().post("/api/v1/auth/token/", b'"' + big + b'"', content_type="application/json")
    assert body.status_code == 413
    assert body.json()["code"] == "too_large"


@pytest.mark.django_db
def test_unknown_api_paths_and_server_errors_answer_json(admin_user, monkeypatch):
    client = Client(raise_request_exception=False)
    missing = client.get("/api/v1/no-such-thing/")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "No API endpoint at /api/v1/no-such-thing/.", "code": "not_found"}
    client.force_login(admin_user)

    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("annotation.selectors.project_list", broken)
    crashed = client.get("/api/v1/projects/")
    assert crashed.status_code == 500
    assert crashed.json() == {"detail": "Server error; it has been logged.", "code": "server_error"}
    assert client.get("/no-such-page/").status_code == 404  # pages keep Django's HTML pages


def _start_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY")}
    clean.update(env, DJANGO_SETTINGS_MODULE="config.settings", PYTHONPATH=str(ROOT))
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    return subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, cwd=ROOT)


def test_debug_is_off_by_default_and_a_secret_key_is_required():
    refused = _start_settings()
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY: set it to a long random string" in refused.stderr
    published = _start_settings(DJANGO_SECRET_KEY="change-me-in-production")
    assert published.returncode != 0
    assert _start_settings(DJANGO_SECRET_KEY="k" * 50).stdout.strip() == "False"
    assert _start_settings(DJANGO_DEBUG="1").stdout.strip() == "True"


@pytest.mark.django_db
def test_a_database_outage_is_a_503_with_retry_after(admin_user, monkeypatch):
    from django.db import OperationalError

    def down(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr("annotation.selectors.project_list", down)
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    response = client.get("/api/v1/projects/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json() == {
        "detail": "The database is unavailable for the moment; retry in a few seconds.",
        "code": "unavailable",
    }


def test_deploy_checks_pass_with_debug_off():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    clean.update(DJANGO_SECRET_KEY="k" * 20 + "-x9Q" * 10, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], env=clean, capture_output=True, text=True, cwd=ROOT
    )
    found = [w for w in ("W004", "W008", "W009", "W012", "W016", "W018") if w in done.stdout + done.stderr]
    assert found == [], done.stdout + done.stderr


@pytest.mark.django_db
def test_pages_carry_a_content_security_policy_and_the_api_docs_need_no_cdn(admin_user):
    client = Client()
    client.force_login(admin_user)
    page = client.get("/")
    policy = page["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    docs = client.get("/api/v1/docs/")
    html = docs.content.decode()
    assert docs.status_code == 200 and "<script>" not in html  # the start-up script is a file
    assert "cdn" not in html.lower() and "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    script = client.get("/api/v1/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")


@pytest.mark.django_db
def test_a_nul_in_a_run_config_is_a_400_naming_the_field(client_for, ml_engineer, tiny_models):
    from rlhf.models import TrainingRun
    from rlhf.services import model_version_register

    project = ProjectFactory()
    model_version_register(
        project=project,
        kind="policy",
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        actor=None,
    )
    response = client_for(ml_engineer).post(
        f"/api/v1/projects/{project.pk}/runs/",
        {"kind": "reward", "config": {"model": {"dtype": "float\x0032"}}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "config.model.dtype: contains a NUL character (\\u0000)."
    assert TrainingRun.objects.count() == 0


@pytest.mark.django_db
def test_an_import_takes_its_format_from_the_query(admin_user, client_for):
    from django.core.files.uploadedfile import SimpleUploadedFile

    project = ProjectFactory(k=2)
    body = b'{"external_id": "a", "prompt": "Hi", "responses": ["x", "y"]}\n'
    response = client_for(admin_user).post(
        f"/api/v1/projects/{project.pk}/import/?format=jsonl",
        {"file": SimpleUploadedFile("prompts.txt", body)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert project.prompts.count() == 1
