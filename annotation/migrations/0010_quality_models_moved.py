"""AgreementReport and ResponseSetConsensus now belong to the quality app (quality 0001); their
tables stay as they are, so only the state changes here."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('annotation', '0009_import_jobs'),
        ('quality', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='AgreementReport'),
                migrations.DeleteModel(name='ResponseSetConsensus'),
            ],
            database_operations=[],
        ),
    ]
