"""The Slurm client commands the slurm executor uses (sbatch, squeue, scancel, sinfo),
run as argument lists with a time limit, never through a shell; and what their output
means. No database, no Django models: plain data in and out.

Output is read in squeue's and sinfo's `--format` text, which every Slurm release
prints the same way (the JSON output changed shape between releases and needs plugins
that not every site builds).
"""

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.executors import slurm_outcomes
from jobs.executors.cluster_outcomes import End
from jobs.executors.cluster_scheduler import SchedulerRefused, SchedulerUnavailable, TaskState

_SEP = "|"
# squeue: job id, array job id, array task id, state, reason, nodes, name
_SQUEUE_FORMAT = _SEP.join(["%i", "%F", "%K", "%T", "%r", "%N", "%j"])
_NAMES_PER_CALL = 200
_IDS_PER_CALL = 500


class SlurmUnavailable(SchedulerUnavailable):
    """A command could not reach the controller (or is missing, or timed out): nothing is
    known about what it would have done."""


class SlurmRefused(SchedulerRefused):
    """The controller answered and refused (an invalid partition or account...)."""


@dataclass(frozen=True)
class SlurmCommands:
    """Where the commands are (`bin_dir`, empty: on PATH) and how long each may take."""

    bin_dir: str = ""
    timeout: float = 10.0

    def _path(self, name: str) -> str:
        if self.bin_dir:
            return str(Path(self.bin_dir) / name)
        return shutil.which(name) or name

    def run(self, name: str, args: Sequence[str]) -> str:
        """stdout of `name args...`; SlurmUnavailable if it could not run or reach the
        controller, SlurmRefused if the controller said no."""
        argv = [self._path(name), *args]
        try:
            done = subprocess.run(  # noqa: S603 (an argv list; values never reach a shell)
                argv, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL, check=False, env=client_environment()
            )
        except FileNotFoundError as exc:
            raise SlurmUnavailable(f"{name} not found (are the Slurm client commands installed?)") from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmUnavailable(f"{name} did not answer within {self.timeout:g} s") from exc
        except OSError as exc:
            raise SlurmUnavailable(f"{name}: {exc}") from exc
        if done.returncode != 0:
            message = " ".join(line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip())[:300]
            message = message or f"{name} exited with status {done.returncode}"
            if _unreachable(message):
                raise SlurmUnavailable(message)
            raise SlurmRefused(message)
        return done.stdout

    def submit(self, *, options: Sequence[str], script: str, script_args: Sequence[str]) -> str:
        """sbatch; the job id it answers."""
        out = self.run("sbatch", ["--parsable", *options, script, *script_args]).strip()
        job_id = out.split(";")[0].strip()  # `id;cluster` on multi-cluster sites
        if not job_id.isdigit():
            raise SlurmUnavailable(f"sbatch answered {out[:100]!r}, not a job id")
        return job_id

    def tasks(self, *, names: Iterable[str]) -> list[TaskState]:
        """Every array task of the jobs named `names` that the controller still knows
        (pending, running, or ended within its MinJobAge)."""
        names = sorted(set(names))
        found: list[TaskState] = []
        for start in range(0, len(names), _NAMES_PER_CALL):
            chunk = names[start : start + _NAMES_PER_CALL]
            out = self.run("squeue", ["--noheader", "--array", "--states=all", f"--name={','.join(chunk)}", f"--format={_SQUEUE_FORMAT}"])
            found.extend(parse_squeue(out))
        return found

    def cancel(self, *, external_ids: Sequence[str]) -> None:
        """scancel, as few calls as possible. An id Slurm no longer knows is not an error."""
        for start in range(0, len(external_ids), _IDS_PER_CALL):
            with contextlib.suppress(SlurmRefused):  # `Invalid job id`: it ended and was forgotten
                self.run("scancel", list(external_ids[start : start + _IDS_PER_CALL]))

    def largest_node(self, *, partition: str = "") -> tuple[int, int]:
        """(cpus, memory MiB) of the largest node (of `partition`)."""
        args = ["--noheader", "--format=%c|%m"] + ([f"--partition={partition}"] if partition else [])
        cpus = memory = 0
        for line in self.run("sinfo", args).splitlines():
            parts = line.strip().split(_SEP)
            if len(parts) == 2:
                cpus = max(cpus, _leading_int(parts[0]))
                memory = max(memory, _leading_int(parts[1]))
        if not cpus:
            raise SlurmRefused(f"sinfo lists no node{' in partition ' + partition if partition else ''}")
        return cpus, memory

    def total_cpus(self, *, partition: str = "") -> int:
        """The cpus of every node (of `partition`), whatever their state (sinfo's %C:
        allocated/idle/other/total)."""
        args = ["--noheader", "--format=%C"] + ([f"--partition={partition}"] if partition else [])
        total = 0
        for line in self.run("sinfo", args).splitlines():
            parts = line.strip().split("/")
            if len(parts) == 4:
                total += _leading_int(parts[3])
        if not total:
            raise SlurmRefused(f"sinfo lists no cpus{' in partition ' + partition if partition else ''}")
        return total

    def config(self) -> dict[str, str]:
        """The controller's configuration (`scontrol show config`: slurm.conf and
        cgroup.conf), name -> value."""
        found: dict[str, str] = {}
        for line in self.run("scontrol", ["show", "config"]).splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() and " " not in name.strip():
                found[name.strip()] = value.strip()
        return found

    def signal_batch(self, *, external_ids: Sequence[str], signal_name: str = "TERM") -> None:
        """Send `signal_name` to the task script only (`scancel --batch`), which stops
        its program with a grace period; an id Slurm no longer knows is not an error."""
        for start in range(0, len(external_ids), _IDS_PER_CALL):
            with contextlib.suppress(SlurmRefused):
                self.run("scancel", ["--batch", f"--signal={signal_name}", *external_ids[start : start + _IDS_PER_CALL]])

    def ping(self) -> None:
        """Raises SlurmUnavailable unless the controller answers."""
        self.run("sinfo", ["--noheader", "--format=%a", "--responding"])

    # -- what its states mean (the cluster executor's Scheduler asks) ------------------
    def describe_end(self, *, state: str | None, status: dict | None, timeout: int, memory_mib: int, cancel_reason: str) -> End:
        return slurm_outcomes.describe_end(state=state, status=status, timeout=timeout, memory_mib=memory_mib, cancel_reason=cancel_reason)

    def state_after_exit(self, *, code: int | None) -> str | None:
        return slurm_outcomes.state_after_exit(code=code)


# What the Slurm commands see of the worker's environment. sbatch passes its environment
# on to the job (--export=ALL): the worker's secrets (DATABASE_URL, SECRET_KEY...) must
# not reach a job. (`--export=NONE` would keep them out too, but makes every task fetch
# the user's login environment on the node: twice the launch time per task here.)
_CLIENT_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"})
_CLIENT_PREFIXES = ("SLURM_", "SBATCH_", "SQUEUE_", "SCANCEL_", "SINFO_")


def client_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name in _CLIENT_NAMES or name.startswith(_CLIENT_PREFIXES)}


def parse_squeue(out: str) -> list[TaskState]:
    found = []
    for line in out.splitlines():
        parts = line.strip().split(_SEP)
        if len(parts) != 7 or not parts[2].isdigit():
            continue  # not an array task of ours (`N/A` task id)
        _, array_id, index, state, reason, nodes, name = parts
        reason = "" if reason == "None" else reason  # squeue's word for no reason
        phase = slurm_outcomes.phase(state)
        found.append(TaskState(array_id=array_id, index=int(index), state=state, phase=phase, reason=reason, nodes=nodes, name=name))
    return found


def _leading_int(text: str) -> int:
    digits = ""
    for char in text.strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else 0


_UNREACHABLE = (
    "unable to contact slurm controller",
    "socket timed out",
    "zero bytes were transmitted",
    "connection refused",
    "communication connection failure",
    "could not establish a configuration source",
    "temporarily unable",
    "not responding",
)


def _unreachable(message: str) -> bool:
    lowered = message.lower()
    return any(part in lowered for part in _UNREACHABLE)
