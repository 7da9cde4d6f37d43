"""LabelerQuality now belongs to the quality app (quality 0001); its table stays as it is, so only
the state changes here."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('labelers', '0004_api_tokens_from_authtoken'),
        ('quality', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='LabelerQuality'),
            ],
            database_operations=[],
        ),
    ]
