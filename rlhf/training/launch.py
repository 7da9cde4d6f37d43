"""Start reward-model training or PPO in this process or as a multi-process job.

`Launcher(mode="inprocess")` calls `train_reward_model` / `run_ppo` directly. The other modes
write a spec (config, rows, paths) to `output_dir/launch/spec.json` and start

- ``torchrun --nproc_per_node N ... -m rlhf.training.worker SPEC`` (mode "torchrun": DDP over
  gloo on CPU or NCCL on GPUs), or
- ``accelerate launch --config_file F ... -m rlhf.training.worker SPEC`` (mode "accelerate":
  whatever the config file says: DDP, DeepSpeed ZeRO-2/3, FSDP, several machines)

in a process group of their own. The worker's main process appends one JSON line per progress
report to `launch/progress.jsonl`; this side tails it into `on_progress`. An exception raised by
`on_progress` (a cancelled run) terminates the whole process group and propagates. The worker
writes its result, or the error it died of, as JSON; the error is raised here with the worker's
message (a ValueError stays a ValueError, so "field: message" errors still reach the API as 400s).

Several machines: the output directory must be on a filesystem every machine sees at the same
path. This side runs on machine 0; on every other machine run
``python -m rlhf.training.launch SPEC --machine-rank R`` once the spec exists (the path is logged).

No Django import here (the package rule), and no torch import either: the launching process stays
light and never initialises CUDA itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.training.config import PPOConfig, RewardModelConfig
from rlhf.training.rows import ComparisonRow, PPOResult, ProgressCallback, PromptRow, RewardResult

logger = logging.getLogger(__name__)

MODES = ("inprocess", "torchrun", "accelerate")
SPEC_VERSION = 1
WORKER_MODULE = "rlhf.training.worker"
POLL_S = 0.2  # how often the progress file is read while the worker runs
TERMINATE_GRACE_S = 15.0  # SIGTERM -> SIGKILL: torchrun needs a moment to stop its ranks
LOG_TAIL_CHARS = 4000
LAUNCHER_PID_ENV = "RLHF_LAUNCHER_PID"  # the worker exits when this process is gone
ROOT = Path(__file__).resolve().parents[2]  # the directory that holds the rlhf package


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Launcher:
    """How a training run is started: in this process, or as several processes on one or more machines."""

    mode: str = _help(
        "inprocess (call the training function here), torchrun (N processes, DDP) or accelerate "
        "(accelerate launch with accelerate_config: DDP, DeepSpeed or FSDP).",
        "inprocess",
    )
    num_processes: int = _help(
        "Processes over all machines together (accelerate's meaning); each machine runs num_processes / num_machines.",
        1,
    )
    accelerate_config: str = _help(
        "accelerate config file (mode accelerate); empty uses accelerate's default config.", ""
    )
    num_machines: int = _help("Machines taking part in the run.", 1)
    machine_rank: int = _help("Rank of this machine, 0 to num_machines - 1 (0 runs the main process).", 0)
    main_process_ip: str = _help("Address of machine 0, reachable from every machine (several machines).", "")
    main_process_port: int = _help("Port of the rendezvous on machine 0 (several machines).", 29500)
    extra_args: tuple[str, ...] = _help(
        "More arguments for torchrun / accelerate launch, placed before the worker module.", ()
    )

    def validate(self) -> None:
        """Raise ValueError("<field>: <what is wrong>") on a bad value."""
        _require(self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}")
        _require(self.num_processes >= 1, "num_processes", "must be >= 1")
        _require(self.num_machines >= 1, "num_machines", "must be >= 1")
        _require(0 <= self.machine_rank < self.num_machines, "machine_rank", "must be in [0, num_machines)")
        _require(
            self.num_processes % self.num_machines == 0,
            "num_processes",
            "must be a multiple of num_machines (it counts the processes of all machines)",
        )
        _require(1 <= self.main_process_port <= 65535, "main_process_port", "must be in [1, 65535]")
        if self.mode == "inprocess":
            _require(
                self.num_processes == 1 and self.num_machines == 1,
                "num_processes",
                "inprocess runs one process; use mode torchrun or accelerate for more",
            )
        if self.mode != "accelerate":
            _require(not self.accelerate_config, "accelerate_config", "only used with mode accelerate")
        if self.num_machines > 1:
            _require(bool(self.main_process_ip.strip()), "main_process_ip", "required with several machines")


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {message}")


# ----------------------------------------------------------------------------- command line


def launch_command(launcher: Launcher, spec_path: str | Path) -> list[str]:
    """The exact command line that starts the worker processes for `launcher` (not inprocess)."""
    launcher.validate()
    n, m = str(launcher.num_processes), str(launcher.num_machines)
    multi_machine = [] if launcher.num_machines == 1 else [str(a) for a in _rendezvous_args(launcher)]
    worker = ["-m", WORKER_MODULE, str(spec_path)]
    if launcher.mode == "torchrun":
        per_machine = str(launcher.num_processes // launcher.num_machines)
        # One machine: a c10d store on a free port (two runs on one host never clash on a port).
        rendezvous = ["--standalone"] if launcher.num_machines == 1 else ["--nnodes", m, *multi_machine]
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            per_machine,
            *rendezvous,
            *launcher.extra_args,
            *worker,
        ]
    if launcher.mode == "accelerate":
        config = ["--config_file", launcher.accelerate_config] if launcher.accelerate_config else []
        # num_processes 1 leaves the count to the config file (a MULTI_GPU config refuses 1).
        count = ["--num_processes", n] if launcher.num_processes > 1 else []
        machines = ["--num_machines", m, *multi_machine] if launcher.num_machines > 1 else []
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *config,
            *count,
            *machines,
            *launcher.extra_args,
            *worker,
        ]
    raise ValueError(f"mode: {launcher.mode} runs in this process, not from a command line")


def _rendezvous_args(launcher: Launcher) -> list[str | int]:
    if launcher.mode == "torchrun":
        return [
            "--node_rank",
            launcher.machine_rank,
            "--master_addr",
            launcher.main_process_ip,
            "--master_port",
            launcher.main_process_port,
        ]
    return [
        "--machine_rank",
        launcher.machine_rank,
        "--main_process_ip",
        launcher.main_process_ip,
        "--main_process_port",
        launcher.main_process_port,
    ]


def launch_env(launcher: Launcher, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: ours, the repository on PYTHONPATH, threads split between ranks."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    if "OMP_NUM_THREADS" not in env:
        # torchrun would set 1 (and warn); on CPU each rank gets its share of the cores instead.
        per_machine = launcher.num_processes // launcher.num_machines
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // per_machine))
    return env


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class LaunchPaths:
    """The files a launched run shares with its worker, all under output_dir/launch."""

    root: Path

    @classmethod
    def under(cls, output_dir: str | Path) -> LaunchPaths:
        return cls(Path(output_dir).resolve() / "launch")

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def progress(self) -> Path:
        return self.root / "progress.jsonl"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def log(self) -> Path:
        return self.root / "launch.log"

    def error(self, rank: int) -> Path:
        return self.root / f"error.rank{rank}.json"

    def errors(self) -> list[Path]:
        return sorted(self.root.glob("error.rank*.json"))

    def clear(self) -> None:
        """Remove what an earlier attempt left (a retried PPO run reuses its output_dir)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in [self.progress, self.result, self.log, *self.errors()]:
            path.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Write atomically, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=jsonable), encoding="utf-8")
    os.replace(tmp, path)


def jsonable(value: Any) -> Any:
    """json.dumps fallback for metric values: numpy / torch scalars and arrays, paths, the rest as text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def _spec(kind: str, config: Any, output_dir: str | Path, launcher: Launcher, paths: LaunchPaths) -> dict[str, Any]:
    return {
        "version": SPEC_VERSION,
        "kind": kind,
        "config": config.to_dict(),
        "output_dir": str(Path(output_dir).resolve()),
        "launcher": dataclasses.asdict(launcher),
        "launch_dir": str(paths.root),
    }


def comparison_rows_from(data: list[dict[str, Any]]) -> list[ComparisonRow]:
    """ComparisonRows back from their dataclasses.asdict() form."""
    return [ComparisonRow(**row) for row in data]


def prompt_rows_from(data: list[dict[str, Any]]) -> list[PromptRow]:
    """PromptRows back from their dataclasses.asdict() form (tags come back as a tuple)."""
    return [PromptRow(**{**row, "tags": tuple(row.get("tags", ()))}) for row in data]


# ----------------------------------------------------------------------------- public API


def launch_reward_model(
    config: RewardModelConfig,
    rows: list[ComparisonRow],
    *,
    output_dir: str | Path,
    on_progress: ProgressCallback | None = None,
    launcher: Launcher,
) -> RewardResult:
    """train_reward_model, in this process or as the processes `launcher` describes."""
    launcher.validate()
    if launcher.mode == "inprocess":
        from rlhf.training.reward import train_reward_model  # torch and trl: imported when used

        return train_reward_model(config, rows, output_dir=output_dir, on_progress=on_progress)
    config.validate()
    paths = LaunchPaths.under(output_dir)
    spec = _spec("reward", config, output_dir, launcher, paths)
    spec["rows"] = [dataclasses.asdict(row) for row in rows]
    data = _run_worker(launcher, spec, paths, on_progress)
    return RewardResult(**data)


def launch_ppo(
    config: PPOConfig,
    prompts: list[PromptRow],
    *,
    policy_path: str,
    ref_path: str,
    reward_path: str | None,
    output_dir: str | Path,
    sft_rows: list[dict[str, Any]] | None = None,
    on_progress: ProgressCallback | None = None,
    resume: bool = True,
    launcher: Launcher,
) -> PPOResult:
    """run_ppo, in this process or as the processes `launcher` describes (resumes from output_dir)."""
    launcher.validate()
    if launcher.mode == "inprocess":
        from rlhf.training.ppo import run_ppo  # torch and transformers: imported when used

        return run_ppo(
            config,
            prompts,
            policy_path=policy_path,
            ref_path=ref_path,
            reward_path=reward_path,
            output_dir=output_dir,
            sft_rows=sft_rows,
            on_progress=on_progress,
            resume=resume,
        )
    config.validate()
    if reward_path is None:
        raise ValueError("reward_path: required (a reward_fn cannot cross into other processes)")
    paths = LaunchPaths.under(output_dir)
    spec = _spec("ppo", config, output_dir, launcher, paths)
    spec.update(
        prompts=[dataclasses.asdict(p) for p in prompts],
        policy_path=policy_path,
        ref_path=ref_path,
        reward_path=reward_path,
        sft_rows=sft_rows,
        resume=resume,
    )
    data = _run_worker(launcher, spec, paths, on_progress)
    return PPOResult(**data)


# ----------------------------------------------------------------------------- running the worker


class WorkerError(RuntimeError):
    """The worker failed with an exception that is not a ValueError; str() is its message."""

    def __init__(self, message: str, *, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type


def _run_worker(
    launcher: Launcher, spec: dict[str, Any], paths: LaunchPaths, on_progress: ProgressCallback | None
) -> dict[str, Any]:
    if launcher.mode == "accelerate" and launcher.accelerate_config and not Path(launcher.accelerate_config).is_file():
        raise ValueError(f"accelerate_config: no such file: {launcher.accelerate_config}")
    paths.clear()
    write_json(paths.spec, spec)
    command = launch_command(launcher, paths.spec)
    logger.info("launching %s run: %s (log %s)", spec["kind"], " ".join(command), paths.log)
    returncode = run_and_follow(command, paths, on_progress, env=launch_env(launcher))
    if paths.result.exists() and returncode == 0:
        return dict(json.loads(paths.result.read_text(encoding="utf-8"))["result"])
    raise worker_error(paths, returncode)


def run_and_follow(
    command: list[str],
    paths: LaunchPaths,
    on_progress: ProgressCallback | None,
    *,
    env: dict[str, str],
    poll_s: float = POLL_S,
) -> int:
    """Run `command` in its own process group, feeding progress lines to on_progress; its exit status.

    Whatever interrupts the wait (on_progress raising, a time limit, Ctrl-C) stops the whole group.
    """
    with paths.log.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    follower = _ProgressFollower(paths.progress, on_progress)
    try:
        while True:
            finished = process.poll() is not None
            follower.feed()  # after poll(): the last lines written before the exit are read too
            if finished:
                return process.returncode
            time.sleep(poll_s)
    except BaseException:
        stop_process_group(process, TERMINATE_GRACE_S)
        raise


class _ProgressFollower:
    """Reads complete JSON lines appended to the progress file since the last call."""

    def __init__(self, path: Path, on_progress: Callable[[int, int, dict[str, Any]], None] | None) -> None:
        self.path = path
        self.on_progress = on_progress
        self.offset = 0

    def feed(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        for line in chunk[:end].splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if self.on_progress is not None:
                self.on_progress(int(record["step"]), int(record["total"]), record["metrics"])


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group (torchrun / accelerate stop their ranks), SIGKILL what is left."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def worker_error(paths: LaunchPaths, returncode: int) -> Exception:
    """The exception to raise for a failed worker: the first error any rank reported, else the log's tail."""
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in paths.errors()]
    if reports:
        # The first failure is the cause; later ranks often fail only because a peer went away.
        first = min(reports, key=lambda r: (r.get("time", 0.0), r.get("rank", 0)))
        message = str(first.get("message", ""))
        exc: Exception
        if first.get("value_error"):
            exc = ValueError(message)
        else:
            exc = WorkerError(message, error_type=str(first.get("error", "")))
        if first.get("traceback"):
            exc.add_note(f"in the training worker (rank {first.get('rank')}):\n{first['traceback']}")
        return exc
    tail = paths.log.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:] if paths.log.exists() else ""
    exc = WorkerError(f"training worker exited with status {returncode} and no result; see {paths.log}")
    if tail:
        exc.add_note(tail)
    return exc


# ----------------------------------------------------------------------------- other machines


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - CLI, exercised by hand on clusters
    """Join a run from another machine: python -m rlhf.training.launch SPEC --machine-rank R."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("spec", help="the run's launch/spec.json (on the shared filesystem)")
    parser.add_argument("--machine-rank", type=int, required=True)
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    raw = dict(spec["launcher"])
    raw["extra_args"] = tuple(raw.get("extra_args", ()))
    launcher = dataclasses.replace(Launcher(**raw), machine_rank=args.machine_rank)
    command = launch_command(launcher, args.spec)
    logging.basicConfig(level=logging.INFO)
    logger.info("joining as machine %d: %s", args.machine_rank, " ".join(command))
    return subprocess.run(command, env=launch_env(launcher), check=False).returncode


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
