"""Drop the single-column indexes of foreign keys that lead a composite index already.

Only the indexes go (the constraints stay): Django's own AlterField would also drop and re-add
each foreign key constraint, re-checking every row of tables that hold millions. On PostgreSQL
they go CONCURRENTLY, so labeling goes on meanwhile (hence a migration outside a transaction).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


DROPPED = [
    ("annotation_assignment", "annotation_assignment_labeler_id_9f1f8212", "labeler_id"),
    ("annotation_assignment", "annotation_assignment_response_set_id_013dc6b8", "response_set_id"),
    ("annotation_comparison", "annotation_comparison_ranking_id_034afe7d", "ranking_id"),
    ("annotation_comparison", "annotation_comparison_response_set_id_3e38e08b", "response_set_id"),
    ("annotation_ranking", "annotation_ranking_labeler_id_060d65d6", "labeler_id"),
    ("annotation_ranking", "annotation_ranking_response_set_id_8b17963e", "response_set_id"),
    ("annotation_responseset", "annotation_responseset_project_id_42fadd87", "project_id"),
]


def _concurrently(schema_editor) -> str:
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def _drop(apps, schema_editor) -> None:
    for _, index, _ in DROPPED:
        schema_editor.execute(f'DROP INDEX{_concurrently(schema_editor)} IF EXISTS "{index}"')


def _create(apps, schema_editor) -> None:
    for table, index, column in DROPPED:
        schema_editor.execute(f'CREATE INDEX{_concurrently(schema_editor)} "{index}" ON "{table}" ("{column}")')


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("annotation", "0004_quality_controls"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(_drop, _create)],
            state_operations=[
                migrations.AlterField(
                    model_name="assignment",
                    name="labeler",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="assignments",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="assignment",
                    name="response_set",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="assignments",
                        to="annotation.responseset",
                    ),
                ),
                migrations.AlterField(
                    model_name="comparison",
                    name="ranking",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="comparisons",
                        to="annotation.ranking",
                    ),
                ),
                migrations.AlterField(
                    model_name="comparison",
                    name="response_set",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="comparisons",
                        to="annotation.responseset",
                    ),
                ),
                migrations.AlterField(
                    model_name="ranking",
                    name="labeler",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="rankings",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="ranking",
                    name="response_set",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="rankings",
                        to="annotation.responseset",
                    ),
                ),
                migrations.AlterField(
                    model_name="responseset",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="response_sets",
                        to="annotation.project",
                    ),
                ),
            ],
        ),
    ]
