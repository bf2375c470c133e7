"""The helpers the notebooks and graders share."""
import re
import subprocess

import pytest
import torch

import colab_setup
from utils import device, load_gpt2, load_shakespeare, load_tokenizer, is_standin, parameter_bytes
from utils.selfcheck import CheckFailed, expect_close


def test_offline_standin_has_gpt2_small_exact_size():
    model = load_gpt2()
    assert is_standin(model)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808
    assert parameter_bytes(model) == 124_439_808 * 4 + sum(b.numel() * 4 for b in model.buffers())
    assert model.transformer.h[0].attn.c_attn.weight.shape == (768, 2304)  # Conv1D: (in, out)


def test_standin_tokenizer_round_trips_shakespeare():
    tokenizer = load_tokenizer()
    line = "First Citizen:\nBefore we proceed any further, hear me speak."
    ids = tokenizer(line)["input_ids"]
    assert tokenizer.decode(ids) == line and len(ids) < len(line) / 2
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"


def test_offline_text_is_the_bundled_coriolanus():
    text = load_shakespeare(2000)
    assert text.startswith("First Citizen:\nBefore we proceed") and len(text) == 2000


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cpu_only_machine_gets_clear_messages():
    assert device.pick_compute_dtype() == torch.float32 and not device.supports_bf16()
    with pytest.raises(device.NoCudaError, match="needs a CUDA GPU"):
        device.require_cuda("Measuring GPU memory")
    assert device.NoCudaError("x")._render_traceback_() == ["NoCudaError: x"]


def test_colab_setup_never_installs_outside_colab_unless_asked(monkeypatch):
    monkeypatch.setitem(colab_setup.FLOORS, "surely-not-a-package", "1.0")
    monkeypatch.delenv("COURSE_INSTALL", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run outside Colab"))
    with pytest.raises(colab_setup.SetupError) as info:
        colab_setup.setup()
    message = info.value._render_traceback_()[0]
    assert "surely-not-a-package>=1.0 (missing)" in message and "pip install" in message


def test_colab_setup_upgrades_what_is_below_a_floor_and_pins_torch(monkeypatch):
    """Each floor is enforced: a version one step below it is upgraded, torch is pinned, never upgraded."""
    real = colab_setup.installed_version
    for dist, floor in colab_setup.FLOORS.items():
        parts = colab_setup.version_tuple(floor)
        older = ".".join(map(str, (parts[0], parts[1] - 1, 99) if parts[1] else (parts[0] - 1, 99, 0)))
        assert colab_setup.version_tuple(older) < parts
        monkeypatch.setattr(colab_setup, "installed_version",
                            lambda d, dist=dist, older=older: older if d == dist else real(d))
        todo = colab_setup.needed()
        assert todo == [(f"{dist}>={floor}", f"{older} is older than {floor}")]
        calls = []
        monkeypatch.setattr(subprocess, "run", lambda cmd, **k: calls.append(cmd) or subprocess.CompletedProcess(cmd, 1, "", "no network"))
        with pytest.raises(colab_setup.SetupError, match="torch is never changed"):
            colab_setup.install(todo)
        (cmd,) = calls
        assert f"{dist}>={floor}" in cmd and not any(arg.startswith("torch") for arg in cmd)
        assert "--constraint" in cmd
    # at the floor itself, and above it, nothing is needed
    monkeypatch.setattr(colab_setup, "installed_version", lambda d: colab_setup.FLOORS.get(d) or real(d))
    assert colab_setup.needed() == []
    assert colab_setup.version_tuple("5.0.0rc1") == (5, 0, 0) and colab_setup.version_tuple("0.48.2") > (0, 48)


def test_colab_setup_pins_the_installed_torch_build():
    assert colab_setup.torch_constraint() == f"torch=={torch.__version__}\n"


def test_colab_setup_reports_versions_device_and_dtype(capsys):
    colab_setup.setup(install_packages=False)
    out = capsys.readouterr().out
    for dist in colab_setup.SHOWN:
        assert f"{dist} {colab_setup.installed_version(dist)}" in out
    assert "compute dtype for quantized layers here: float32" in out or torch.cuda.is_available()
    assert re.search(r"setup took \d+\.\d s", out)


def test_checks_fail_with_one_line_messages():
    with pytest.raises(CheckFailed, match="expected 84,000,000,000") as info:
        expect_close(83e9, 84e9, "total")
    assert info.value._render_traceback_() == ["\u2717 total: expected 84,000,000,000, got 83,000,000,000."]
    with pytest.raises(CheckFailed, match="expected the number"):
        expect_close("84 GB", 84e9, "total")


def test_instructor_cli_rejects_unknown_assignment(capsys):
    from instructor.__main__ import main
    with pytest.raises(SystemExit) as exit_:
        main(["check", "ex9_nothing"])
    assert exit_.value.code == 2 and "unknown assignment" in capsys.readouterr().err
