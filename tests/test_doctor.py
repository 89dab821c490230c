"""``autoloss doctor`` (the stack and a live check per device) and ``scripts/gpu_check.sh`` on a machine without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmcv.ops")

from autoloss import doctor
from cli_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
LABELS = [check.label for check in doctor.CHECKS]


def _rows(stdout: str) -> dict[str, list[str]]:
    """The table's lines by their first word or label (a check has one line per device), each with its
    columns' padding reduced to single spaces."""
    rows: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        text = line.strip()
        for key in LABELS + ["every check"] + [r for r in ("python", "torch", "gpus", "mmcv", "mmengine", "mmdet",
                                                            "sympy", "deap", "ray")]:
            if text.startswith(key + " ") or text == key:
                rows.setdefault(key, []).append(" ".join(text.split()))  # columns: single spaces
                break
    return rows


def _no_gpu(monkeypatch):
    """Whatever this machine has: torch sees no GPU."""
    monkeypatch.setattr(doctor, "cuda_devices", lambda: ([], f"{doctor.NO_GPU} (test)"))


def test_on_this_machine_every_check_passes_on_the_cpu_and_the_table_says_so():
    import torch

    result = run_cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "loading annotations" not in result.stdout  # pycocotools' chatter stays out of the table
    rows = _rows(result.stdout)
    for name in ("python", "torch", "mmcv", "mmengine", "mmdet", "sympy", "deap", "ray"):
        assert name in rows, result.stdout
    assert "ops compiled with CUDA:" in rows["mmcv"][0]
    for label in LABELS:
        cpu = [line for line in rows[label] if " cpu " in line]
        assert len(cpu) == 1 and " ok " in cpu[0] and " s; " in cpu[0], result.stdout
    if torch.cuda.is_available():
        assert all(" cuda:0 " in "".join(rows[label]) for label in LABELS)
    else:
        assert "no CUDA device visible to torch" in rows["gpus"][0]
        assert len(rows["every check"]) == 1 and " cuda " in rows["every check"][0]
        assert " skipped " in rows["every check"][0] and "no CUDA device visible to torch" in rows["every check"][0]
    assert result.stdout.strip().splitlines()[-1].startswith("result: everything works on cpu")


def test_without_a_gpu_the_gpu_rows_are_skipped_with_the_reason_and_that_is_no_failure(monkeypatch):
    _no_gpu(monkeypatch)
    result = run_cli("doctor", "--device", "cuda")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(result.stdout)
    assert not any(label in rows for label in LABELS)  # nothing ran
    assert rows["every check"] == ["every check cuda skipped no CUDA device visible to torch (test)"]


def test_mmcv_without_its_compiled_ops_fails_with_one_line_each_and_the_other_checks_still_run(monkeypatch):
    _no_gpu(monkeypatch)
    monkeypatch.setitem(sys.modules, "mmcv.ops", None)  # `import mmcv.ops` raises ImportError, as mmcv-lite's does
    result = run_cli("doctor", "--device", "cpu", "--only", "roi_align", "--only", "nms", "--only", "tracker")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr and result.stderr == ""
    rows = _rows(result.stdout)
    (mmcv,) = rows["mmcv"]
    assert mmcv.startswith("mmcv FAIL 2.1") and "its compiled ops do not import" in mmcv
    assert "reinstall mmcv 2.1.0, run `bash scripts/install.sh` (README, 'The two commands')" in mmcv
    # every check still ran and has its own row (the tracker's backbone is mmdet's ResNet, which needs mmcv.ops)
    for label in ("mmcv RoIAlign", "mmcv NMS", "tracker step (DARTS cell)"):
        (line,) = rows[label]
        assert " cpu FAIL ModuleNotFoundError: " in line and "mmcv.ops" in line, line
        assert "mmcv's compiled ops are missing" in line and "scripts/install.sh" in line
    assert "result: FAILED (see the FAIL rows) on cpu (exit 1)" in result.stdout


def test_mmcv_ops_without_get_compiling_cuda_version_is_a_failed_stack_row(monkeypatch):
    import mmcv.ops

    _no_gpu(monkeypatch)
    monkeypatch.delattr(mmcv.ops, "get_compiling_cuda_version")
    result = run_cli("doctor", "--device", "cpu", "--only", "nms")
    assert result.returncode == 1, result.stdout + result.stderr
    (mmcv,) = _rows(result.stdout)["mmcv"]
    assert "FAIL" in mmcv and "get_compiling_cuda_version" in mmcv and "scripts/install.sh" in mmcv
    assert " ok " in _rows(result.stdout)["mmcv NMS"][0]


def test_a_gpu_that_mmcv_was_not_built_for_is_a_failed_stack_row(monkeypatch):
    monkeypatch.setattr(doctor, "cuda_devices", lambda: (["cuda:0"], ""))
    monkeypatch.setattr(doctor, "_gpus", lambda: [doctor.Row("stack", "gpu 0", "info", "a test GPU", "cuda:0")])
    row = doctor._mmcv()  # this machine's mmcv: compiled without CUDA (or, on a GPU machine, with it)
    import mmcv.ops

    if any(ch.isdigit() for ch in str(mmcv.ops.get_compiling_cuda_version())):
        assert row.status == "ok"
    else:
        assert row.status == "FAIL" and "built without CUDA" in row.detail and "AUTOLOSS_MMCV_WHEEL" in row.detail


def test_an_op_without_its_cuda_kernel_gets_the_reason_and_the_rebuild_advice(monkeypatch):
    import mmcv.ops

    def roi_align(*args, **kwargs):
        raise RuntimeError("roi_align_forward_impl: implementation for device cuda:0 not found.\nmore")

    monkeypatch.setattr(mmcv.ops, "roi_align", roi_align)
    _no_gpu(monkeypatch)
    result = run_cli("doctor", "--device", "cpu", "--only", "roi_align", "--only", "nms")
    assert result.returncode == 1
    (line,) = _rows(result.stdout)["mmcv RoIAlign"]
    assert "cpu FAIL RuntimeError: roi_align_forward_impl: implementation for device cuda:0 not found. more" in line
    assert " ok " in _rows(result.stdout)["mmcv NMS"][0]
    row = doctor.run_check(doctor.CHECKS[doctor.CHECK_NAMES.index("roi_align")], "cpu", None)
    assert row.status == "FAIL" and "\n" not in row.detail
    assert "rebuild mmcv 2.1.0 against this torch's CUDA" in line  # mmcv 2.x's words for a CPU-only build
    assert "rebuild mmcv 2.1.0" not in doctor.failure(RuntimeError("CUDA error: an illegal memory access"), "cuda:0")
    assert "a bug in autoloss" in doctor.failure(RuntimeError("Expected all tensors to be on the same device, but "
                                                              "found at least two devices, cuda:0 and cpu!"), "cuda:0")
    assert "ran out of memory" in doctor.failure(RuntimeError("CUDA out of memory. Tried to allocate"), "cuda:0")


def test_a_missing_required_package_fails_and_ray_is_optional(monkeypatch):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda name: None if name in ("deap", "ray") else real(name))
    _no_gpu(monkeypatch)
    result = run_cli("doctor", "--device", "cpu", "--only", "nms")
    assert result.returncode == 1
    rows = _rows(result.stdout)
    assert rows["deap"] == ["deap FAIL not installed -> run `bash scripts/install.sh` (README, 'The two commands')"]
    assert rows["ray"] == ["ray not installed (optional)"]


def test_json_output_and_timed_steps(monkeypatch):
    _no_gpu(monkeypatch)
    result = run_cli("doctor", "--only", "tracker", "--only", "nms", "--steps", "3", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True
    checks = {(r["name"], r["device"]): r for r in data["rows"] if r["section"] == "check"}
    tracker = checks[("tracker step (DARTS cell)", "cpu")]
    assert tracker["status"] == "ok" and tracker["steps"] == 3 and 0 < tracker["step_seconds"] < tracker["seconds"]
    assert checks[("mmcv NMS", "cpu")]["steps"] == 0  # not a training step: not timed
    assert checks[("every check", "cuda")]["status"] == "skipped"


def test_bad_options_are_one_line():
    result = run_cli("doctor", "--only", "nope")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--only" in result.stderr


def test_gpu_check_script_stops_with_exit_2_and_one_line_where_there_is_no_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run its GPU stages")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("AUTOLOSS_GPU_CHECK_ON_CPU", None)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "out")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "result: everything works on cpu (exit 0)" in result.stdout  # doctor ran first
    last = result.stdout.strip().splitlines()[-1]
    assert last == ("gpu_check: no GPU: torch sees no CUDA device, so the GPU stages cannot run "
                    "(doctor's gpus row above says why)")
    assert not (tmp_path / "out").exists()  # nothing written without a GPU
