"""Idempotency keys are unique per labeler and project, not per labeler across every project.

A ranking gets its set's project (copied, so that a unique constraint can name it), existing rows
are filled in from their sets, and the key's constraint moves from (labeler, key) to (labeler,
project, key).
"""

from django.conf import settings
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_project(apps, schema_editor):
    Ranking = apps.get_model("annotation", "Ranking")
    ResponseSet = apps.get_model("annotation", "ResponseSet")
    project = ResponseSet.objects.filter(pk=OuterRef("response_set_id")).values("project_id")[:1]
    postgresql = schema_editor.connection.vendor == "postgresql"
    if postgresql:
        # Check the new foreign key row by row now: deferred checks still pending would make
        # PostgreSQL refuse the ALTER TABLE that follows in this transaction.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    Ranking.objects.update(project_id=Subquery(project))
    if postgresql:
        schema_editor.execute("SET CONSTRAINTS ALL DEFERRED")


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0006_partial_indexes_for_live_leases"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="ranking",
            name="project",
            field=models.ForeignKey(
                db_index=False,
                null=True,
                on_delete=models.deletion.PROTECT,
                related_name="+",
                to="annotation.project",
            ),
        ),
        migrations.RunPython(fill_project, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="ranking",
            name="project",
            field=models.ForeignKey(
                db_index=False,
                on_delete=models.deletion.PROTECT,
                related_name="+",
                to="annotation.project",
            ),
        ),
        migrations.RemoveConstraint(model_name="ranking", name="ranking_unique_idempotency_key"),
        migrations.AddConstraint(
            model_name="ranking",
            constraint=models.UniqueConstraint(
                fields=("labeler", "project", "idempotency_key"), name="ranking_unique_idempotency_key"
            ),
        ),
    ]
