"""Index live leases only: a set's taken slots and the leases to expire are both questions about
status = 'leased', and partial indexes keep them as small as the number of labelers at work."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0005_drop_indexes_covered_by_composites"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="assignment",
            name="assignment_slots_idx",
        ),
        migrations.RemoveIndex(
            model_name="assignment",
            name="assignment_expiry_idx",
        ),
        migrations.AddIndex(
            model_name="assignment",
            index=models.Index(
                condition=models.Q(("status", "leased")),
                fields=["response_set", "expires_at"],
                name="assignment_live_slots_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="assignment",
            index=models.Index(
                condition=models.Q(("status", "leased")), fields=["expires_at"], name="assignment_live_expiry_idx"
            ),
        ),
    ]
