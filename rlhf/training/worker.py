"""One rank of a launched training run: ``python -m rlhf.training.worker SPEC``.

Started by torchrun or accelerate launch (see rlhf.training.launch), once per process. Every rank
loads the spec and calls `train_reward_model` or `run_ppo`, which find their rank through
accelerate. Only the main process (RANK 0) appends progress lines and writes the result; a rank
that fails writes the error it died of, so the launcher can raise it with the same message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from rlhf.training.config import PPOConfig, RewardModelConfig
from rlhf.training.launch import (
    LAUNCHER_PID_ENV,
    SPEC_VERSION,
    LaunchPaths,
    comparison_rows_from,
    jsonable,
    prompt_rows_from,
    write_json,
)

logger = logging.getLogger(__name__)

WATCHDOG_S = 2.0


def rank() -> int:
    """This process's global rank (0 when not launched by torchrun / accelerate)."""
    return int(os.environ.get("RANK", "0"))


def load_spec(path: str | Path) -> dict[str, Any]:
    """The spec written by the launcher; ValueError on another version."""
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    if spec.get("version") != SPEC_VERSION:
        raise ValueError(f"spec: version {spec.get('version')!r}, this worker reads {SPEC_VERSION}")
    return dict(spec)


class ProgressWriter:
    """on_progress that appends {"step", "total", "metrics"} lines, on the main process only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self, step: int, total: int, metrics: dict[str, Any]) -> None:
        if rank() != 0:
            return
        line = json.dumps({"step": step, "total": total, "metrics": metrics}, default=jsonable)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")  # one write per line: the launcher only reads complete lines


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the stage the spec names on this rank; the result as a JSON-able dict."""
    on_progress = ProgressWriter(LaunchPaths(Path(spec["launch_dir"])).progress)
    if spec["kind"] == "reward":
        # Imported per stage: trl is slow to import and PPO does not need it.
        from rlhf.training.reward import train_reward_model

        reward = train_reward_model(
            RewardModelConfig.from_dict(spec["config"]),
            comparison_rows_from(spec["rows"]),
            output_dir=spec["output_dir"],
            on_progress=on_progress,
        )
        return {"model_path": reward.model_path, "metrics": reward.metrics, "seed": reward.seed}
    if spec["kind"] == "ppo":
        from rlhf.training.ppo import run_ppo

        ppo = run_ppo(
            PPOConfig.from_dict(spec["config"]),
            prompt_rows_from(spec["prompts"]),
            policy_path=spec["policy_path"],
            ref_path=spec["ref_path"],
            reward_path=spec["reward_path"],
            output_dir=spec["output_dir"],
            sft_rows=spec.get("sft_rows"),
            on_progress=on_progress,
            resume=bool(spec.get("resume", True)),
        )
        return {"model_path": ppo.model_path, "metrics": ppo.metrics, "samples": ppo.samples, "seed": ppo.seed}
    raise ValueError(f"kind: unknown stage {spec['kind']!r}")


def error_report(exc: BaseException) -> dict[str, Any]:
    """What the launcher needs to raise the same error: type, message, traceback, rank, time."""
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "value_error": isinstance(exc, ValueError),
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
        "rank": rank(),
        "time": time.time(),
    }


def start_watchdog() -> None:
    """Exit when the launcher is gone: the ranks run in a session of their own and would outlive it.

    Two ways to lose it: the launching process (a Celery worker) is killed, or torchrun / accelerate
    itself is, which reparents this process.
    """
    launcher_pid = int(os.environ.get(LAUNCHER_PID_ENV, "0"))
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_S)
            gone = os.getppid() != parent
            if launcher_pid and not gone:
                try:
                    os.kill(launcher_pid, 0)
                except ProcessLookupError:
                    gone = True
                except PermissionError:
                    pass
            if gone:
                logger.error("rank %d: the launcher is gone, exiting", rank())
                os._exit(1)

    threading.Thread(target=watch, name="launcher-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Entry point of each rank; 0 on success, 1 after writing the error report."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rlhf.training.worker SPEC", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank()} %(levelname)s %(name)s: %(message)s")
    spec = load_spec(args[0])
    paths = LaunchPaths(Path(spec["launch_dir"]))
    start_watchdog()
    try:
        result = run_spec(spec)
    except Exception as exc:
        logger.exception("rank %d failed", rank())
        write_json(paths.error(rank()), error_report(exc))
        return 1
    if rank() == 0:
        write_json(paths.result, {"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
