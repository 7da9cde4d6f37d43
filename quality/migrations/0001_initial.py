"""The quality app takes over three models without touching the database.

AgreementReport and ResponseSetConsensus were the annotation app's (annotation 0003, 0004),
LabelerQuality the labelers app's (labelers 0002). Their tables keep their names (Meta.db_table):
this migration only adds them to the quality app's state, and annotation 0010 and labelers 0005
take them out of those apps' states (Django's SeparateDatabaseAndState, database_operations empty).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('annotation', '0009_import_jobs'),
        ('labelers', '0004_api_tokens_from_authtoken'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='ResponseSetConsensus',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('ranks', models.JSONField()),
                        ('scores', models.JSONField(default=dict)),
                        ('confidence', models.FloatField(help_text="Share of the set's labels that agree with this order.")),
                        ('source', models.CharField(choices=[('model', "Bradley-Terry over the labelers' comparisons"), ('review', 'Accepted by an admin in review'), ('gold', 'The gold reference')], default='model', max_length=8)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('accepted_ranking', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='annotation.ranking')),
                        ('response_set', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='consensus', to='annotation.responseset')),
                    ],
                    options={
                        'db_table': 'annotation_responsesetconsensus',
                    },
                ),
                migrations.CreateModel(
                    name='AgreementReport',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('computed_at', models.DateTimeField(auto_now_add=True)),
                        ('last_ranking_id', models.BigIntegerField(default=0)),
                        ('seconds', models.FloatField(default=0.0)),
                        ('data', models.JSONField()),
                        ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='agreement_reports', to='annotation.project')),
                    ],
                    options={
                        'db_table': 'annotation_agreementreport',
                        'ordering': ['-computed_at', '-id'],
                        'indexes': [models.Index(fields=['project', '-computed_at'], name='agreementreport_latest_idx')],
                    },
                ),
                migrations.CreateModel(
                    name='LabelerQuality',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('qualification', models.CharField(choices=[('not_required', 'Not required'), ('pending', 'Ranking qualification items'), ('qualified', 'Qualified'), ('failed', 'Did not qualify')], default='not_required', max_length=16)),
                        ('gold_items', models.PositiveIntegerField(default=0)),
                        ('gold_pairs', models.PositiveIntegerField(default=0)),
                        ('gold_pairs_agreed', models.PositiveIntegerField(default=0)),
                        ('reliability', models.FloatField(blank=True, help_text='One-coin Dawid-Skene skill (0..1).', null=True)),
                        ('comparisons', models.PositiveIntegerField(default=0)),
                        ('agreement_with_consensus', models.FloatField(blank=True, null=True)),
                        ('position_bias', models.FloatField(blank=True, help_text='Share of decided pairs won by the response shown first (0.5: none).', null=True)),
                        ('fast_items', models.PositiveIntegerField(default=0)),
                        ('intransitive_cycles', models.PositiveIntegerField(default=0)),
                        ('median_time_ms', models.PositiveIntegerField(blank=True, null=True)),
                        ('override', models.BooleanField(default=False)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('labeler', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='quality', to=settings.AUTH_USER_MODEL)),
                        ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='labeler_quality', to='annotation.project')),
                    ],
                    options={
                        'db_table': 'labelers_labelerquality',
                        'constraints': [models.UniqueConstraint(fields=('project', 'labeler'), name='labelerquality_unique')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
