import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('labelers', '0002_quality_controls'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ApiToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(blank=True, help_text='What the token is for, as its owner calls it.', max_length=100)),
                ('prefix', models.CharField(help_text="The secret's first characters, to tell tokens apart.", max_length=8)),
                ('digest', models.CharField(help_text='SHA-256 of the secret, in hex.', max_length=64, unique=True)),
                ('password_fingerprint', models.CharField(help_text="SHA-256 of the user's password hash when issued: a new password ends the token.", max_length=64)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('expires_at', models.DateTimeField()),
                ('last_used_at', models.DateTimeField(blank=True, help_text='Kept to the minute, not every request.', null=True)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'constraints': [models.CheckConstraint(condition=models.Q(('expires_at__gt', models.F('created_at'))), name='apitoken_expires_after_created')],
            },
        ),
    ]
