"""Work for a cluster: the members x folds and ablation units as a SLURM job
array whose tasks resume."""

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from melanoma.cli import app
from melanoma.config import resolve
from melanoma.experiments.slurm import MEMBERS, array_script, member_commands

RUNNER = CliRunner()


def _commands(script: str) -> list[str]:
    """The COMMANDS=( ... ) entries of a generated script, as bash reads them."""
    body = script[script.index("COMMANDS=(\n") + len("COMMANDS=(\n") : script.index("\n)\n")]
    return [shlex.split(line)[0] for line in body.splitlines()]


def test_the_winners_18_members_x_5_folds(tmp_path, monkeypatch):
    commands = member_commands(Path("/d"), tmp_path, gpus=1)
    assert len(MEMBERS) == 18 and len(commands) == 90
    first = commands[0]
    python = shlex.quote(sys.executable)  # this interpreter: a batch job's shell has no venv activated
    assert first == (
        f"{python} -m melanoma train /d --preset {MEMBERS[0]} --out {tmp_path / MEMBERS[0]} --folds 0 --resume"
    )
    # a finished fold is left out; a stopped one stays (its command resumes it)
    for fold, (done, epochs) in {0: (15, 15), 1: (7, 15)}.items():
        folder = tmp_path / MEMBERS[0] / f"fold{fold}"
        folder.mkdir(parents=True)
        torch.save({"epoch": done, "epochs": epochs}, folder / "state.pt")
    left = member_commands(Path("/d"), tmp_path, [MEMBERS[0]])
    assert [c.split("--folds ")[1].split()[0] for c in left] == ["1", "2", "3", "4"]
    multi = member_commands(Path("/d"), tmp_path, [MEMBERS[1]], [2], gpus=8)
    assert multi == [f"{python} -m torch.distributed.run --standalone --nproc-per-node 8 -m melanoma train /d "
                     f"--preset {MEMBERS[1]} --out {tmp_path / MEMBERS[1]} --folds 2 --resume"]  # fmt: skip
    # relative paths become absolute: a task may start in another folder
    monkeypatch.chdir(tmp_path)
    assert f" train {tmp_path / 'd'} " in member_commands(Path("d"), Path("runs"), [MEMBERS[1]], [0])[0]
    with pytest.raises(ValueError, match="unknown preset"):
        member_commands(Path("/d"), tmp_path, ["b99"])


def test_the_array_script(tmp_path):
    commands = ["melanoma train 'my data' --folds 0 --resume", "melanoma train x --folds 1 --resume"]
    script = array_script(commands, "job", tmp_path / "logs", gpus=2, cpus=6, hours=3, partition="gpu",
                          setup="module load cuda")  # fmt: skip
    for line in ("#SBATCH --array=0-1", "#SBATCH --requeue", "#SBATCH --gres=gpu:2", "#SBATCH --time=3:00:00",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --partition=gpu", "#SBATCH --open-mode=append",
                 f"#SBATCH --output={tmp_path / 'logs'}/%x_%a.log", "module load cuda"):  # fmt: skip
        assert line in script.splitlines(), line
    assert _commands(script) == commands
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid bash
    with pytest.raises(ValueError, match="nothing left to run"):
        array_script([], "job", tmp_path)


SUITE = """
name = "tiny"
folds = [0]
[baseline]
backbone = "test_efficientnet"
image_size = 32
epochs = 2
batch_size = 16
lr = 3e-4
pretrained = false
num_workers = 0
[variants.no-augmentation]
augment = false
"""


def test_an_array_task_runs_its_unit_and_a_requeued_one_resumes(tmp_path, tiny_data):
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    out, script = tmp_path / "abl", tmp_path / "abl.sbatch"
    args = ["ablate", "units", str(suite), "--data", str(tiny_data), "--out", str(out), "--slurm", str(script),
            "--logs", str(tmp_path / "logs")]  # fmt: skip
    r = RUNNER.invoke(app, args)
    assert r.exit_code == 0 and "a job array of 2 task(s)" in r.output, r.output
    text = script.read_text()
    assert "#SBATCH --array=0-1" in text and len(_commands(text)) == 2
    assert RUNNER.invoke(app, args).exit_code == 2  # an existing script needs --force
    # Run task 1 as SLURM would, but stop it after its first epoch ("preempted"), then requeue it.
    env = {
        **os.environ,
        "SLURM_ARRAY_TASK_ID": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    state = out / "no-augmentation" / "fold0" / "state.pt"
    task = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    for _ in range(1200):
        if state.is_file() or task.poll() is not None:
            break
        time.sleep(0.1)
    os.killpg(task.pid, 9)  # SIGKILL: no chance to tidy up, as a preemption past its grace time
    task.communicate()
    requeued = subprocess.run(["bash", str(script)], env={**env, "SLURM_RESTART_COUNT": "1"}, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert requeued.returncode == 0, requeued.stdout[-2000:] + requeued.stderr[-2000:]
    assert "restart 1" in requeued.stdout
    log = (out / "no-augmentation" / "log.txt").read_text()
    assert "fold 0: resuming after epoch 1 of 2" in log  # killed after epoch 1: the requeued task went on
    assert torch.load(state, weights_only=True)["epoch"] == 2
    r = RUNNER.invoke(app, ["ablate", "units", str(suite), "--data", str(tiny_data), "--out", str(out)])
    assert r.output.count("melanoma ablate run") == 1 and "--variant baseline" in r.output  # task 1 is done


def test_members_command(tmp_path, tiny_data):
    """members checks first that the data serves every member, and passes train options on."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    script = tmp_path / "m.sbatch"
    args = ["members", str(data), "--out", str(tmp_path / "runs"), "--slurm", str(script)]
    r = RUNNER.invoke(app, args)
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and "cannot serve member" in out and "melanoma prepare" in out, r.output
    assert not script.exists()
    r = RUNNER.invoke(app, ["prepare", str(data), str(data), "--sizes", "512", "--workers", "1"])
    assert r.exit_code == 0, r.output
    small = [m for m in MEMBERS if resolve(m).data_size == 512]  # default, newfold: the tfrecord maps
    picked = [a for m in small for a in ("--preset", m)]
    r = RUNNER.invoke(app, [*args[:4], *picked, "--folds", "0,4"])
    assert r.exit_code == 0 and r.output.count(f"-m melanoma train {data} ") == 2 * len(small), r.output
    r = RUNNER.invoke(
        app, [*args, *picked, "--gpus", "4", "--partition", "a100", "--amp", "bf16", "--workers", "6"]
    )
    assert r.exit_code == 0 and f"a job array of {5 * len(small)} task(s)" in r.output, r.output
    text = script.read_text()
    assert f"#SBATCH --array=0-{5 * len(small) - 1}" in text and "#SBATCH --gres=gpu:4" in text
    assert "--nproc-per-node 4" in text and f"#SBATCH --chdir={Path.cwd()}" in text.replace('"', "")
    assert all(c.endswith("--resume --amp bf16 --workers 6") for c in _commands(text))
    for bad, says in [(["--amp", "bf17"], "amp must be one of"), (["--bogus", "1"], "No such option: --bogus"),
                      (["--resume"], "--resume is set by members")]:  # fmt: skip
        r = RUNNER.invoke(app, [*args, *picked, "--force", *bad])
        assert r.exit_code == 2 and says in " ".join(r.output.split()), r.output
