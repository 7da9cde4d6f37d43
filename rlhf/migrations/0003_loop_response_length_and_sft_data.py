"""One response length per project (max_response_tokens) and the SFT data file for PPO-ptx.

The length used to live twice, in generation_config.max_new_tokens and ppo_config.response_length;
it moves into the new field (the generation value when both are set: that is what labelers ranked)
and leaves the JSON overrides, where loop_settings_update no longer accepts it."""

from django.db import migrations, models


def _clamp(value):
    return max(1, min(4096, value))


def lengths_into_the_field(apps, schema_editor):
    LoopSettings = apps.get_model("rlhf", "LoopSettings")
    for loop in LoopSettings.objects.all():
        generation = dict(loop.generation_config or {})
        ppo = dict(loop.ppo_config or {})
        if "max_new_tokens" not in generation and "response_length" not in ppo:
            continue
        lengths = [generation.pop("max_new_tokens", None), ppo.pop("response_length", None)]
        found = [v for v in lengths if isinstance(v, int) and not isinstance(v, bool)]
        if found:
            loop.max_response_tokens = _clamp(found[0])
        loop.generation_config, loop.ppo_config = generation, ppo
        loop.save(update_fields=["max_response_tokens", "generation_config", "ppo_config"])


def lengths_back_into_the_json(apps, schema_editor):
    LoopSettings = apps.get_model("rlhf", "LoopSettings")
    for loop in LoopSettings.objects.exclude(max_response_tokens=64):
        loop.generation_config = {**(loop.generation_config or {}), "max_new_tokens": loop.max_response_tokens}
        loop.ppo_config = {**(loop.ppo_config or {}), "response_length": loop.max_response_tokens}
        loop.save(update_fields=["generation_config", "ppo_config"])


class Migration(migrations.Migration):
    dependencies = [
        ("rlhf", "0002_training_runs"),
    ]

    operations = [
        migrations.AddField(
            model_name="loopsettings",
            name="max_response_tokens",
            field=models.PositiveIntegerField(
                default=64,
                help_text="Most tokens per response, in the batches labelers rank and in PPO rollouts alike (1 to 4096).",
            ),
        ),
        migrations.AddField(
            model_name="loopsettings",
            name="sft_data_path",
            field=models.CharField(
                blank=True,
                help_text='JSONL file on the server of {"prompt", "completion"}, {"prompt", "response"} or {"messages"} '
                "rows: the SFT data PPO-ptx mixes into each update (ptx_coef > 0).",
                max_length=1000,
            ),
        ),
        migrations.RunPython(lengths_into_the_field, lengths_back_into_the_json, elidable=True),
        migrations.AddConstraint(
            model_name="loopsettings",
            constraint=models.CheckConstraint(
                condition=models.Q(("max_response_tokens__gte", 1), ("max_response_tokens__lte", 4096)),
                name="loopsettings_max_response_tokens_range",
            ),
        ),
    ]
