"""Configs (JSON round trip, help text, validation) and the no-Django rule."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.training.config import GenerationConfig, ModelConfig, PPOConfig, RewardModelConfig

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "rlhf" / "training"
CONFIGS = [ModelConfig, GenerationConfig, RewardModelConfig, PPOConfig]


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_has_help_and_round_trips_through_json(cls):
    config = cls()
    for f in dataclasses.fields(config):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
    data = json.loads(json.dumps(config.to_dict()))
    assert cls.from_dict(data) == config


def test_from_dict_names_unknown_and_bad_fields():
    with pytest.raises(ValueError, match=r"^colour: unknown field for PPOConfig$"):
        PPOConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match=r"^batch_size: expected an integer, got 'x'$"):
        PPOConfig.from_dict({"batch_size": "x"})
    with pytest.raises(ValueError, match=r"^model.dtype: expected a string"):
        GenerationConfig.from_dict({"model": {"dtype": 3}})
    config = GenerationConfig.from_dict({"model": {"model_name_or_path": "m"}, "temperature": 1})
    assert config.model.model_name_or_path == "m" and config.temperature == 1.0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PPOConfig(response_length=0), "response_length: must be > 0"),
        (PPOConfig(batch_size=16, mini_batch_size=5), "mini_batch_size: must divide batch_size"),
        (PPOConfig(kl_estimator="k7"), "kl_estimator: must be one of k1, k2, k3, abs"),
        (PPOConfig(temperature=0.0), "temperature: must be > 0"),
        (GenerationConfig(model=ModelConfig(model_name_or_path="m"), max_new_tokens=0), "max_new_tokens: must be > 0"),
        (GenerationConfig(), "model_name_or_path: must not be empty"),
        (
            RewardModelConfig(model=ModelConfig(model_name_or_path="m"), max_pairs_per_batch=0),
            "max_pairs_per_batch: must be > 0",
        ),
        (ModelConfig(model_name_or_path="m", dtype="float8"), "dtype: must be one of"),
    ],
)
def test_validate_names_the_field(config, message):
    with pytest.raises(ValueError, match=r"^" + message.replace("(", r"\(")):
        config.validate()


def test_no_django_import_anywhere_in_rlhf_training():
    forbidden = ("django", "annotation", "labelers", "rlhf.models", "rest_framework", "celery")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]  # type: ignore[misc]
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_importing_the_package_loads_no_django():
    code = (
        "import sys, rlhf.training, rlhf.training.reward, rlhf.training.ppo, "
        "rlhf.training.generation, rlhf.training.tiny;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
