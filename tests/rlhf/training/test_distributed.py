"""Launching training as several processes: command lines, the launcher/worker protocol, and real
2-process runs (torchrun, gloo on CPU) that check the ranks stay in sync.

The `slow` tests start `torchrun --nproc_per_node 2 -m rlhf.training.worker SPEC` through the
launcher, exactly as the gpu worker does. A probe (`sitecustomize.py` on PYTHONPATH, so the command
line stays the real one) records on each rank: every DDP-wrapped module's parameter hash before and
after training, the rank's own gradients (a tensor hook runs before DDP's all-reduce), and every
weight, checkpoint and tokenizer write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from rlhf.training import launch, worker
from rlhf.training.config import ModelConfig, PPOConfig, RewardModelConfig
from rlhf.training.launch import Launcher, LaunchPaths, WorkerError, launch_command, launch_ppo, launch_reward_model
from rlhf.training.rows import ComparisonRow, PPOResult, PromptRow, RewardResult
from tests.rlhf.training.conftest import make_comparisons

ROOT = Path(__file__).resolve().parents[3]
ACCELERATE_CONFIGS = sorted((ROOT / "config" / "accelerate").glob("*.yaml"))
PY = sys.executable


def _rm_config(path: str = "unused", **kwargs) -> RewardModelConfig:
    defaults = {"learning_rate": 3e-3, "num_epochs": 1.0, "max_pairs_per_batch": 12, "logging_steps": 1}
    defaults.update(kwargs)
    return RewardModelConfig(model=ModelConfig(model_name_or_path=path, device="cpu"), **defaults)


def _ppo_config(**kwargs) -> PPOConfig:
    defaults = {
        "total_episodes": 16,
        "batch_size": 4,
        "mini_batch_size": 2,
        "num_ppo_epochs": 1,
        "response_length": 6,
        "learning_rate": 1e-3,
        "device": "cpu",
        "value_model": "head",
        "missing_eos_penalty": 0.0,
    }
    defaults.update(kwargs)
    return PPOConfig(**defaults)


# ----------------------------------------------------------------------------- command lines


def test_torchrun_on_one_machine_uses_a_standalone_rendezvous():
    assert launch_command(Launcher(mode="torchrun", num_processes=2), "/runs/7/launch/spec.json") == [
        PY,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "rlhf.training.worker",
        "/runs/7/launch/spec.json",
    ]


def test_torchrun_on_several_machines_splits_the_processes():
    launcher = Launcher(
        mode="torchrun",
        num_processes=16,
        num_machines=2,
        machine_rank=1,
        main_process_ip="10.0.0.1",
        main_process_port=29555,
        extra_args=("--max_restarts", "0"),
    )
    assert launch_command(launcher, "spec.json") == [
        PY,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "8",
        "--nnodes",
        "2",
        "--node_rank",
        "1",
        "--master_addr",
        "10.0.0.1",
        "--master_port",
        "29555",
        "--max_restarts",
        "0",
        "-m",
        "rlhf.training.worker",
        "spec.json",
    ]


def test_accelerate_passes_the_config_file_and_the_process_count():
    launcher = Launcher(mode="accelerate", num_processes=4, accelerate_config="/etc/rlhf/zero3.yaml")
    assert launch_command(launcher, "spec.json") == [
        PY,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "/etc/rlhf/zero3.yaml",
        "--num_processes",
        "4",
        "-m",
        "rlhf.training.worker",
        "spec.json",
    ]
    # One process: the count comes from the config file (a MULTI_GPU config refuses 1).
    assert launch_command(dataclasses.replace(launcher, num_processes=1), "spec.json") == [
        PY,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "/etc/rlhf/zero3.yaml",
        "-m",
        "rlhf.training.worker",
        "spec.json",
    ]


def test_accelerate_on_several_machines():
    launcher = Launcher(
        mode="accelerate",
        num_processes=16,
        accelerate_config="multi_node.yaml",
        num_machines=2,
        machine_rank=0,
        main_process_ip="10.0.0.1",
        extra_args=("--mixed_precision", "bf16"),
    )
    assert launch_command(launcher, "spec.json") == [
        PY,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "multi_node.yaml",
        "--num_processes",
        "16",
        "--num_machines",
        "2",
        "--machine_rank",
        "0",
        "--main_process_ip",
        "10.0.0.1",
        "--main_process_port",
        "29500",
        "--mixed_precision",
        "bf16",
        "-m",
        "rlhf.training.worker",
        "spec.json",
    ]


@pytest.mark.parametrize(
    ("launcher", "message"),
    [
        (Launcher(mode="slurm"), "mode: must be one of inprocess, torchrun, accelerate"),
        (Launcher(mode="inprocess", num_processes=2), "num_processes: inprocess runs one process"),
        (Launcher(mode="torchrun", num_processes=0), "num_processes: must be >= 1"),
        (Launcher(mode="torchrun", num_processes=3, num_machines=2, main_process_ip="h"), "num_processes: must be a"),
        (Launcher(mode="torchrun", num_processes=4, num_machines=2), "main_process_ip: required with several"),
        (Launcher(mode="torchrun", machine_rank=1), "machine_rank: must be in [0, num_machines)"),
        (Launcher(mode="torchrun", main_process_port=0), "main_process_port: must be in [1, 65535]"),
        (Launcher(mode="torchrun", accelerate_config="ddp.yaml"), "accelerate_config: only used with mode accelerate"),
    ],
)
def test_launcher_validate_names_the_field(launcher, message):
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace(")", r"\)")):
        launcher.validate()
    with pytest.raises(ValueError, match="^" + message.split(":")[0]):
        launch_reward_model(_rm_config(), [], output_dir="unused", launcher=launcher)


def test_launch_env_puts_the_repository_on_the_path_and_splits_threads():
    launcher = Launcher(mode="torchrun", num_processes=2)
    env = launch.launch_env(launcher, {"PATH": "/bin", "PYTHONPATH": "/extra"})
    assert env == {
        "PATH": "/bin",
        "PYTHONPATH": f"{ROOT}{os.pathsep}/extra",
        "RLHF_LAUNCHER_PID": str(os.getpid()),
        "OMP_NUM_THREADS": str(max(1, len(os.sched_getaffinity(0)) // 2)),
    }
    assert launch.launch_env(launcher, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"


def test_the_launcher_module_loads_neither_torch_nor_django():
    code = "import sys, rlhf.training.launch; print(sorted(m for m in ('torch', 'django') if m in sys.modules))"
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- accelerate configs


def test_every_example_config_is_there():
    assert [p.name for p in ACCELERATE_CONFIGS] == [
        "ddp.yaml",
        "deepspeed_zero2.yaml",
        "deepspeed_zero3.yaml",
        "fsdp.yaml",
        "multi_node.yaml",
    ]


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_is_accepted_by_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    raw = yaml.safe_load(path.read_text())
    config = load_config_from_file(str(path))  # unknown top-level keys raise here
    assert isinstance(config, ClusterConfig)
    # accelerate copies nested keys onto its launch arguments and ignores the ones it does not
    # know: check each names a real argument, as accelerate prefixes them.
    parser = launch_command_parser()
    dests = {action.dest for action in parser._actions}
    for section in ("deepspeed_config", "fsdp_config"):
        for key in raw.get(section, {}):
            name = key if section != "fsdp_config" or key.startswith("fsdp") else f"fsdp_{key}"
            assert name in dests, f"{path.name}: {section}.{key} is not an accelerate launch argument"
    args = parser.parse_args(["--config_file", str(path), "-m", "rlhf.training.worker", "spec.json"])
    args, _, _ = _validate_launch_command(args)
    expected = {
        "ddp.yaml": "multi_gpu",
        "multi_node.yaml": "multi_gpu",
        "deepspeed_zero2.yaml": "use_deepspeed",
        "deepspeed_zero3.yaml": "use_deepspeed",
        "fsdp.yaml": "use_fsdp",
    }[path.name]
    assert getattr(args, expected) is True
    assert args.num_processes >= 2 and args.mixed_precision == "no"


def test_deepspeed_and_fsdp_configs_build_their_plugins(monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    def launch_env_for(name: str) -> dict[str, str]:
        parser = launch_command_parser()
        args = parser.parse_args(["--config_file", str(ROOT / "config" / "accelerate" / name), "x.py"])
        args, defaults, _ = _validate_launch_command(args)
        if args.use_deepspeed:
            args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
            return prepare_deepspeed_cmd_env(args)[1]
        return prepare_multi_gpu_env(args)

    for name, stage, save_16bit in (("deepspeed_zero2.yaml", 2, False), ("deepspeed_zero3.yaml", 3, True)):
        with monkeypatch.context() as m:
            for key, value in launch_env_for(name).items():
                m.setenv(key, value)
            plugin = DeepSpeedPlugin()
            assert plugin.zero_stage == stage
            zero = plugin.deepspeed_config["zero_optimization"]
            assert zero["stage3_gather_16bit_weights_on_model_save"] is save_16bit
            # Left to the run config: accelerate would otherwise override its gradient accumulation.
            assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
            assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in os.environ
    with monkeypatch.context() as m:
        for key, value in launch_env_for("fsdp.yaml").items():
            m.setenv(key, value)
        fsdp = FullyShardedDataParallelPlugin()
        assert fsdp.fsdp_version == 2 and fsdp.reshard_after_forward is True
        assert fsdp.state_dict_type.name == "FULL_STATE_DICT"  # the saved model is an ordinary one


# ----------------------------------------------------------------------------- launcher <-> worker protocol


@pytest.fixture
def worker_in_this_process(monkeypatch):
    """run_and_follow that runs the worker's main() here instead of starting processes."""
    commands: list[list[str]] = []

    def run_and_follow(command, paths, on_progress, *, env, poll_s=launch.POLL_S):
        commands.append(command)
        assert env["RLHF_LAUNCHER_PID"] == str(os.getpid())
        code = worker.main([command[-1]])
        launch._ProgressFollower(paths.progress, on_progress).feed()
        return code

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(launch, "run_and_follow", run_and_follow)
    monkeypatch.setattr(worker, "start_watchdog", lambda: None)
    return commands


def test_reward_spec_round_trips_and_the_result_comes_back(worker_in_this_process, monkeypatch, tmp_path):
    import rlhf.training.reward as reward

    rows = [
        ComparisonRow(prompt="p", chosen="a", rejected="b", group_id="g1", margin=1.5, tag="t", weight=0.5),
        ComparisonRow(
            prompt=[{"role": "user", "content": "hi"}],
            chosen="x",
            rejected="y",
            group_id="g2",
            is_tie=True,
            split="val",
            human_agreement=0.75,
        ),
    ]
    config = _rm_config("/models/sft", include_ties=True)
    seen = {}

    def fake_train(cfg, got_rows, *, output_dir, on_progress=None):
        seen.update(config=cfg, rows=got_rows, output_dir=output_dir)
        on_progress(1, 2, {"reward/loss": 0.7})
        on_progress(2, 2, {"reward/loss": 0.5, "reward/accuracy": 0.75})
        return RewardResult(model_path=str(output_dir), metrics={"reward/loss_curve": [(1, 0.7)]}, seed=cfg.seed)

    monkeypatch.setattr(reward, "train_reward_model", fake_train)
    progress = []
    result = launch_reward_model(
        config,
        rows,
        output_dir=tmp_path / "work",
        on_progress=lambda *call: progress.append(call),
        launcher=Launcher(mode="torchrun", num_processes=2),
    )
    spec_path = tmp_path.resolve() / "work" / "launch" / "spec.json"
    assert worker_in_this_process == [launch_command(Launcher(mode="torchrun", num_processes=2), spec_path)]
    assert seen == {"config": config, "rows": rows, "output_dir": str(tmp_path.resolve() / "work")}
    assert progress == [(1, 2, {"reward/loss": 0.7}), (2, 2, {"reward/loss": 0.5, "reward/accuracy": 0.75})]
    assert result == RewardResult(
        model_path=str(tmp_path.resolve() / "work"), metrics={"reward/loss_curve": [[1, 0.7]]}, seed=42
    )
    spec = json.loads(spec_path.read_text())
    assert spec["kind"] == "reward" and spec["version"] == 1 and spec["config"] == config.to_dict()


def test_ppo_spec_round_trips_and_the_result_comes_back(worker_in_this_process, monkeypatch, tmp_path):
    import rlhf.training.ppo as ppo

    prompts = [
        PromptRow(id="1", text="Name a colour.", tags=("easy", "colours")),
        PromptRow(id="2", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]),
    ]
    sft_rows = [{"prompt": "Name a colour.", "response": "Blue."}]
    config = _ppo_config(ptx_coef=0.5)
    seen = {}

    def fake_run_ppo(cfg, got_prompts, **kwargs):
        seen.update(config=cfg, prompts=got_prompts, **kwargs)
        kwargs["on_progress"](1, 1, {"ppo/kl": 0.1})
        return PPOResult(model_path=kwargs["output_dir"], metrics={"ppo/kl": 0.1}, samples=[{"reward": 1.0}], seed=3)

    monkeypatch.setattr(ppo, "run_ppo", fake_run_ppo)
    progress = []
    result = launch_ppo(
        config,
        prompts,
        policy_path="/models/policy",
        ref_path="/models/ref",
        reward_path="/models/rm",
        output_dir=tmp_path,
        sft_rows=sft_rows,
        on_progress=lambda *call: progress.append(call),
        resume=False,
        launcher=Launcher(mode="torchrun", num_processes=2),
    )
    on_progress = seen.pop("on_progress")
    assert isinstance(on_progress, worker.ProgressWriter)
    assert seen == {
        "config": config,
        "prompts": prompts,
        "policy_path": "/models/policy",
        "ref_path": "/models/ref",
        "reward_path": "/models/rm",
        "output_dir": str(tmp_path.resolve()),
        "sft_rows": sft_rows,
        "resume": False,
    }
    assert progress == [(1, 1, {"ppo/kl": 0.1})]
    assert result == PPOResult(
        model_path=str(tmp_path.resolve()), metrics={"ppo/kl": 0.1}, samples=[{"reward": 1.0}], seed=3
    )


def test_a_value_error_in_the_worker_is_a_value_error_here(worker_in_this_process, monkeypatch, tmp_path):
    import rlhf.training.reward as reward

    def fake_train(cfg, rows, *, output_dir, on_progress=None):
        raise ValueError("rows[0].weight: must be >= 0")

    monkeypatch.setattr(reward, "train_reward_model", fake_train)
    rows = make_comparisons(1)
    with pytest.raises(ValueError) as info:
        launch_reward_model(_rm_config(), rows, output_dir=tmp_path, launcher=Launcher(mode="torchrun"))
    assert type(info.value) is ValueError and str(info.value) == "rows[0].weight: must be >= 0"
    assert "in the training worker (rank 0)" in info.value.__notes__[0]
    assert "fake_train" in info.value.__notes__[0]  # the worker's traceback travels with it


def test_another_error_in_the_worker_keeps_its_message(worker_in_this_process, monkeypatch, tmp_path):
    import rlhf.training.reward as reward

    def fake_train(cfg, rows, *, output_dir, on_progress=None):
        raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(reward, "train_reward_model", fake_train)
    with pytest.raises(WorkerError) as info:
        launch_reward_model(_rm_config(), make_comparisons(1), output_dir=tmp_path, launcher=Launcher(mode="torchrun"))
    assert str(info.value) == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert info.value.error_type == "MemoryError"


def test_the_first_failing_rank_is_the_error_reported(tmp_path):
    paths = LaunchPaths(tmp_path)
    launch.write_json(paths.error(0), {"error": "RuntimeError", "message": "peer closed", "rank": 0, "time": 2.0})
    launch.write_json(
        paths.error(1), {"error": "ValueError", "message": "x: bad", "value_error": True, "rank": 1, "time": 1.0}
    )
    exc = launch.worker_error(paths, 1)
    assert type(exc) is ValueError and str(exc) == "x: bad"


def test_only_the_main_process_writes_progress_and_the_result(monkeypatch, tmp_path):
    import rlhf.training.reward as reward

    monkeypatch.setattr(
        reward,
        "train_reward_model",
        lambda cfg, rows, *, output_dir, on_progress=None: (
            on_progress(1, 1, {"reward/loss": 1.0}) or RewardResult(str(output_dir), {}, 0)
        ),
    )
    monkeypatch.setattr(worker, "start_watchdog", lambda: None)
    paths = LaunchPaths(tmp_path / "launch")
    paths.clear()
    spec = launch._spec("reward", _rm_config(), tmp_path, Launcher(mode="torchrun", num_processes=2), paths)
    spec["rows"] = [dataclasses.asdict(r) for r in make_comparisons(1)]
    launch.write_json(paths.spec, spec)
    monkeypatch.setenv("RANK", "1")
    assert worker.main([str(paths.spec)]) == 0
    assert not paths.progress.exists() and not paths.result.exists()
    monkeypatch.setenv("RANK", "0")
    assert worker.main([str(paths.spec)]) == 0
    assert [json.loads(line) for line in paths.progress.read_text().splitlines()] == [
        {"step": 1, "total": 1, "metrics": {"reward/loss": 1.0}}
    ]
    assert json.loads(paths.result.read_text())["result"]["model_path"] == str(tmp_path)
    spec["version"] = 99
    launch.write_json(paths.spec, spec)
    with pytest.raises(ValueError, match=r"^spec: version 99, this worker reads 1$"):
        worker.main([str(paths.spec)])


def test_parent_side_checks_come_before_any_process(tmp_path):
    torchrun = Launcher(mode="torchrun", num_processes=2)
    with pytest.raises(ValueError, match=r"^learning_rate: must be > 0$"):
        launch_reward_model(_rm_config(learning_rate=0.0), [], output_dir=tmp_path, launcher=torchrun)
    with pytest.raises(ValueError, match=r"^reward_path: required \(a reward_fn cannot cross"):
        launch_ppo(
            _ppo_config(), [], policy_path="p", ref_path="p", reward_path=None, output_dir=tmp_path, launcher=torchrun
        )
    missing = Launcher(mode="accelerate", num_processes=2, accelerate_config=str(tmp_path / "nope.yaml"))
    with pytest.raises(ValueError, match=r"^accelerate_config: no such file: "):
        launch_reward_model(_rm_config(), [], output_dir=tmp_path, launcher=missing)
    assert not (tmp_path / "launch" / "spec.json").exists()


# ----------------------------------------------------------------------------- following a real subprocess

FAKE_WORKER = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    root, mode = sys.argv[1], sys.argv[2]
    progress = open(os.path.join(root, "progress.jsonl"), "a")
    def line(step, total):
        return json.dumps({"step": step, "total": total, "metrics": {"ppo/kl": step / 10}})
    if mode == "stream":
        for step in (1, 2, 3):
            text = line(step, 3) + "\\n"
            progress.write(text[:10]); progress.flush(); time.sleep(0.3)  # half a line first
            progress.write(text[10:]); progress.flush()
        sys.exit(0)
    if mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open(os.path.join(root, "pids"), "w").write(f"{os.getpid()} {child.pid}")
        progress.write(line(1, 3) + "\\n"); progress.flush()
        time.sleep(120)
    print("Traceback: something native broke", flush=True)
    sys.exit(3)
    """
)


def _fake(paths: LaunchPaths, mode: str) -> list[str]:
    return [PY, "-c", FAKE_WORKER, str(paths.root), mode]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_progress_lines_stream_in_order_while_the_worker_runs(tmp_path):
    paths = LaunchPaths(tmp_path)
    paths.clear()
    calls = []
    code = launch.run_and_follow(
        _fake(paths, "stream"), paths, lambda *c: calls.append((time.monotonic(), c)), env=dict(os.environ)
    )
    assert code == 0
    assert [c for _, c in calls] == [(s, 3, {"ppo/kl": s / 10}) for s in (1, 2, 3)]
    assert calls[1][0] - calls[0][0] > 0.2  # delivered as written, not all at the end


def test_an_exception_from_on_progress_stops_the_whole_process_group(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "TERMINATE_GRACE_S", 1.0)
    paths = LaunchPaths(tmp_path)
    paths.clear()

    class Cancelled(Exception):
        pass

    def on_progress(step, total, metrics):
        raise Cancelled("cancelled by ada")

    start = time.monotonic()
    with pytest.raises(Cancelled, match=r"^cancelled by ada$"):
        launch.run_and_follow(_fake(paths, "hang"), paths, on_progress, env=dict(os.environ))
    assert time.monotonic() - start < 20
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [_alive(p) for p in pids] == [False, False]  # the worker and its child (SIGTERM ignored)


def test_a_worker_that_dies_without_a_report_raises_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "launch_command", lambda launcher, spec: _fake(LaunchPaths(Path(spec).parent), "die"))
    with pytest.raises(WorkerError, match=r"^training worker exited with status 3 and no result") as info:
        launch_reward_model(_rm_config(), make_comparisons(1), output_dir=tmp_path, launcher=Launcher(mode="torchrun"))
    assert "Traceback: something native broke" in info.value.__notes__[0]


def test_the_worker_exits_when_its_launcher_is_gone(tmp_path):
    gone = subprocess.Popen([PY, "-c", "pass"])
    gone.wait()
    code = "from rlhf.training.worker import start_watchdog; import time; start_watchdog(); time.sleep(60)"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RLHF_LAUNCHER_PID": str(gone.pid)}
    start = time.monotonic()
    out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and time.monotonic() - start < 20


# ----------------------------------------------------------------------------- inprocess


def test_inprocess_calls_the_training_function_here(sft_policy, tmp_path):
    rows = make_comparisons(6, k=3) + make_comparisons(2, k=3, seed=1, split="val")
    progress = []
    result = launch_reward_model(
        _rm_config(sft_policy),
        rows,
        output_dir=tmp_path,
        on_progress=lambda *call: progress.append(call),
        launcher=Launcher(),
    )
    assert isinstance(result, RewardResult) and result.model_path == str(tmp_path)
    assert result.metrics["reward/train_pairs"] == 18 and "reward/accuracy" in result.metrics
    assert progress and progress[-1][0] == progress[-1][1]
    assert not (tmp_path / "launch").exists()  # no spec, no subprocess


# ----------------------------------------------------------------------------- 2 processes (torchrun, gloo)

PROBE = textwrap.dedent(
    '''
    """Per-rank probe for tests/rlhf/training/test_distributed.py; imported at interpreter start."""
    import atexit, hashlib, json, os

    if "RANK" in os.environ and os.environ.get("PROBE_OUT"):
        import safetensors.torch
        import torch

        rank = int(os.environ["RANK"])
        record = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]), "weight_writes": [],
                  "torch_saves": [], "tokenizer_saves": [], "ddp": [], "results": []}
        wrapped = []

        def param_hash(module):
            h = hashlib.sha256()
            for name, p in sorted(module.named_parameters()):
                h.update(name.encode())
                h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
            return h.hexdigest()

        save_file = safetensors.torch.save_file  # patched before transformers binds the name

        def recording_save_file(tensors, filename, *args, **kwargs):
            record["weight_writes"].append(str(filename))
            return save_file(tensors, filename, *args, **kwargs)

        safetensors.torch.save_file = recording_save_file
        torch_save = torch.save

        def recording_torch_save(obj, f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)):  # not the in-memory buffers of gather_object
                record["torch_saves"].append(str(f))
            return torch_save(obj, f, *args, **kwargs)

        torch.save = recording_torch_save

        import transformers
        from torch.nn.parallel import DistributedDataParallel

        tokenizer_save = transformers.PreTrainedTokenizerBase.save_pretrained

        def recording_tokenizer_save(self, directory, *args, **kwargs):
            record["tokenizer_saves"].append(str(directory))
            return tokenizer_save(self, directory, *args, **kwargs)

        transformers.PreTrainedTokenizerBase.save_pretrained = recording_tokenizer_save
        ddp_init = DistributedDataParallel.__init__

        def recording_ddp_init(self, module, *args, **kwargs):
            ddp_init(self, module, *args, **kwargs)
            entry = {"class": type(module).__name__, "initial_hash": param_hash(module), "local_grads": []}
            trainable = [p for p in module.parameters() if p.requires_grad]
            # A tensor hook gets this rank's own gradient, before DDP's all-reduce averages it.
            trainable[-1].register_hook(lambda g: entry["local_grads"].append(g.double().sum().item()))
            record["ddp"].append(entry)
            wrapped.append((entry, module))

        DistributedDataParallel.__init__ = recording_ddp_init

        if os.environ.get("PROBE_WRAP_PPO"):
            import rlhf.training.ppo

            run_ppo = rlhf.training.ppo.run_ppo

            def recording_run_ppo(*args, **kwargs):
                result = run_ppo(*args, **kwargs)
                record["results"].append({k: v for k, v in result.metrics.items() if k != "ppo/history"})
                return result

            rlhf.training.ppo.run_ppo = recording_run_ppo

        @atexit.register
        def dump():
            for entry, module in wrapped:
                entry["final_hash"] = param_hash(module)
                entry["pretrained"] = {
                    type(m).__name__: param_hash(m) for m in module.modules()
                    if isinstance(m, transformers.PreTrainedModel)
                }
            with open(os.path.join(os.environ["PROBE_OUT"], f"rank{rank}.json"), "w") as fh:
                json.dump(record, fh)
    '''
)


def param_hash(module) -> str:
    """The probe's hash, for a model loaded here."""
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """Install the per-rank probe for processes started from here; returns a reader of its records."""
    probe_dir, out = tmp_path / "probe", tmp_path / "records"
    probe_dir.mkdir()
    out.mkdir()
    (probe_dir / "sitecustomize.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(probe_dir), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PROBE_OUT", str(out))
    monkeypatch.delenv("RANK", raising=False)

    def records() -> list[dict]:
        return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]

    return records


def assert_ranks_in_sync(records: list[dict], module_class: str) -> dict:
    """Both ranks trained `module_class` under DDP from the same start, computed different gradients
    and ended with bit-identical parameters that differ from the start: only an all-reduce of the
    gradients gets there. (Without it, each rank applies its own gradients and the hashes part
    after the first step; that is what the differing local gradients show.)"""
    assert [r["rank"] for r in records] == [0, 1] and {r["world_size"] for r in records} == {2}
    entries = [next(e for e in r["ddp"] if e["class"] == module_class) for r in records]
    assert entries[0]["initial_hash"] == entries[1]["initial_hash"]
    assert entries[0]["final_hash"] == entries[1]["final_hash"]
    assert entries[0]["final_hash"] != entries[0]["initial_hash"]  # training moved the parameters
    assert entries[0]["local_grads"] and len(entries[0]["local_grads"]) == len(entries[1]["local_grads"])
    assert entries[0]["local_grads"] != entries[1]["local_grads"]  # each rank saw its own data
    return entries[0]


def assert_only_rank0_wrote(records: list[dict], output_dir: Path) -> None:
    rank0, rank1 = records
    assert rank0["weight_writes"] == [str(output_dir / "model.safetensors")]  # one model, written once
    assert rank0["tokenizer_saves"] == [str(output_dir)]
    assert (rank1["weight_writes"], rank1["torch_saves"], rank1["tokenizer_saves"]) == ([], [], [])


@pytest.mark.slow
def test_reward_model_on_two_processes(sft_policy, probe, tmp_path):
    from transformers import AutoModelForSequenceClassification

    rows = make_comparisons(12, k=4) + make_comparisons(4, k=4, seed=1, split="val")  # 6 batches of 12 pairs
    progress = []
    out = tmp_path / "rm"
    result = launch_reward_model(
        _rm_config(sft_policy),
        rows,
        output_dir=out,
        on_progress=lambda *call: progress.append(call),
        launcher=Launcher(mode="torchrun", num_processes=2),
    )
    assert isinstance(result, RewardResult) and result.model_path == str(out.resolve())
    assert result.metrics["reward/train_pairs"] == 72 and result.metrics["reward/eval_pairs"] == 24
    # 6 batches shared by 2 ranks: 3 optimizer steps, streamed in order, then the final metrics.
    assert [(step, total) for step, total, _ in progress] == [(1, 3), (2, 3), (3, 3), (3, 3)]
    assert "reward/accuracy" in progress[-1][2]
    records = probe()
    trained = assert_ranks_in_sync(records, "GPT2ForSequenceClassification")
    saved = AutoModelForSequenceClassification.from_pretrained(out, num_labels=1)
    assert param_hash(saved) == trained["final_hash"]  # the saved model is the one every rank holds
    assert_only_rank0_wrote(records, out.resolve())
    assert records[0]["torch_saves"] == []


@pytest.fixture(scope="module")
def tiny_reward_model(sft_policy, tmp_path_factory) -> str:
    """A real tiny reward model (a reward_fn cannot cross into other processes), trained here."""
    from rlhf.training.reward import train_reward_model

    out = tmp_path_factory.mktemp("rm")
    return train_reward_model(_rm_config(sft_policy, num_epochs=2.0), make_comparisons(12), output_dir=out).model_path


@pytest.mark.slow
def test_ppo_on_two_processes(sft_policy, tiny_reward_model, probe, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from rlhf.training.tiny import load_corpus

    monkeypatch.setenv("PROBE_WRAP_PPO", "1")
    prompts = [PromptRow(id=f"p{i}", text=r["instruction"]) for i, r in enumerate(load_corpus()[:16])]
    progress = []
    out = tmp_path / "ppo"
    result = launch_ppo(
        _ppo_config(save_every=2),
        prompts,
        policy_path=sft_policy,
        ref_path=sft_policy,
        reward_path=tiny_reward_model,
        output_dir=out,
        on_progress=lambda *call: progress.append(call),
        launcher=Launcher(mode="torchrun", num_processes=2),
    )
    # (iv) progress streamed in order, and a PPOResult rebuilt from the worker's result file
    assert [(step, total) for step, total, _ in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [m["ppo/episode"] for _, _, m in progress] == [8, 16, 24, 32]  # batch_size per rank
    assert isinstance(result, PPOResult) and result.model_path == str(out.resolve()) and result.seed == 42
    assert result.samples and {"prompt", "response", "reward"} <= set(result.samples[0])
    assert len(result.metrics["ppo/history"]) == 4
    # (i) the ranks sampled disjoint prompt shards that together cover every prompt
    by_rank = json.loads((out / "ppo_metrics.json").read_text())["prompt_ids_by_rank"]
    assert sorted(by_rank) == ["0", "1"] and all(len(ids) == 16 for ids in by_rank.values())
    assert not set(by_rank["0"]) & set(by_rank["1"])
    assert set(by_rank["0"]) | set(by_rank["1"]) == {p.id for p in prompts}
    # (ii) identical parameters on both ranks after training on different data
    records = probe()
    checksums = [r["results"][0]["ppo/policy_checksum"] for r in records]
    assert checksums[0] == pytest.approx(checksums[1], rel=1e-9, abs=1e-9)
    assert result.metrics["ppo/policy_checksum"] == checksums[0]
    policy = assert_ranks_in_sync(records, "GPT2LMHeadModel")
    saved = AutoModelForCausalLM.from_pretrained(out)
    assert param_hash(saved) == policy["final_hash"]
    assert param_hash(AutoModelForCausalLM.from_pretrained(sft_policy)) == policy["initial_hash"]
    # (iii) one model and one checkpoint (save_every=2 of 4 steps), written by the main process only
    assert_only_rank0_wrote(records, out.resolve())
    assert len(records[0]["torch_saves"]) == 1 and "checkpoint" in records[0]["torch_saves"][0]
    assert not (out / "checkpoint.pt").exists()  # removed once the run completed


@pytest.mark.slow
def test_a_value_error_on_the_ranks_reaches_the_caller(sft_policy, tmp_path):
    rows = [dataclasses.replace(r, weight=-1.0) for r in make_comparisons(2)]
    with pytest.raises(ValueError) as info:
        launch_reward_model(
            _rm_config(sft_policy), rows, output_dir=tmp_path, launcher=Launcher(mode="torchrun", num_processes=2)
        )
    assert type(info.value) is ValueError and str(info.value) == "rows[0].weight: must be >= 0"
    assert sorted(p.name for p in LaunchPaths.under(tmp_path).errors()) == ["error.rank0.json", "error.rank1.json"]


def test_stop_process_group_leaves_a_finished_process_alone():
    process = subprocess.Popen([PY, "-c", "pass"], start_new_session=True)
    process.wait()
    launch.stop_process_group(process, 0.1)  # no error, no signal to a reused group id
    assert process.returncode == 0
