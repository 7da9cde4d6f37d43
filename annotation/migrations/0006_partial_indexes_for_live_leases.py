"""Index live leases only: a set's taken slots and the leases to expire are both questions about
status = 'leased', and partial indexes keep them as small as the number of labelers at work.

On PostgreSQL the indexes are built and dropped CONCURRENTLY, so labeling goes on meanwhile (hence a
migration outside a transaction).
"""

from django.conf import settings
from django.db import migrations, models

OLD = [
    models.Index(fields=["response_set", "status", "expires_at"], name="assignment_slots_idx"),
    models.Index(fields=["status", "expires_at"], name="assignment_expiry_idx"),
]
NEW = [
    models.Index(
        condition=models.Q(("status", "leased")),
        fields=["response_set", "expires_at"],
        name="assignment_live_slots_idx",
    ),
    models.Index(condition=models.Q(("status", "leased")), fields=["expires_at"], name="assignment_live_expiry_idx"),
]


def _swap(schema_editor, model, add: list[models.Index], remove: list[models.Index]) -> None:
    options = {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
    for index in add:
        schema_editor.add_index(model, index, **options)
    for index in remove:
        schema_editor.remove_index(model, index, **options)


def _forward(apps, schema_editor) -> None:
    _swap(schema_editor, apps.get_model("annotation", "Assignment"), add=NEW, remove=OLD)


def _backward(apps, schema_editor) -> None:
    _swap(schema_editor, apps.get_model("annotation", "Assignment"), add=OLD, remove=NEW)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("annotation", "0005_drop_indexes_covered_by_composites"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(_forward, _backward)],
            state_operations=[
                *[migrations.RemoveIndex(model_name="assignment", name=index.name) for index in OLD],
                *[migrations.AddIndex(model_name="assignment", index=index) for index in NEW],
            ],
        ),
    ]
