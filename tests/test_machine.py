import builtins
import os
import subprocess

import pytest

from charrnn import machine


def test_cpu_model_is_a_name():
    name = machine.cpu_model()
    assert isinstance(name, str) and name.strip() == name and name


def test_blas_info_is_the_library_numba_calls():
    info = machine.blas_info()
    assert info is not None  # scipy and threadpoolctl are dependencies
    assert isinstance(info["library"], str) and info["library"]
    assert isinstance(info["version"], str) and info["version"]
    assert isinstance(info["kernel"], str) and info["kernel"]
    assert info["threads"] >= 1
    assert os.path.isfile(info["filepath"])
    # scipy.linalg.cython_blas names the library it needs; numpy's own BLAS is another file.
    import scipy.linalg.cython_blas as cython_blas

    with open(cython_blas.__file__, "rb") as module_file:
        assert os.path.basename(info["filepath"]).encode() in module_file.read()
    summary = machine.blas_summary(info)
    assert info["library"] in summary and info["kernel"] in summary


def test_blas_summary_without_a_blas():
    assert "unknown" in machine.blas_summary(None)
    assert (
        machine.blas_summary({"library": "mkl", "version": "2024.2", "kernel": None, "threads": 1})
        == "mkl 2024.2, 1 thread"
    )


@pytest.fixture
def no_cpuinfo(monkeypatch):
    real_open = builtins.open

    def refusing_open(path, *args, **kwargs):
        if path == machine.CPUINFO:
            raise PermissionError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)


def test_cpu_model_without_cpuinfo_asks_lscpu_or_platform(no_cpuinfo, monkeypatch):
    assert machine._cpuinfo_model() is None
    monkeypatch.setattr(machine, "_lscpu_model", lambda: None)
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    assert machine.cpu_model() == "aarch64"
    monkeypatch.setattr(machine.platform, "machine", lambda: "")
    assert machine.cpu_model() == "unknown"


def test_cpu_model_from_lscpu_when_cpuinfo_names_no_model(tmp_path, monkeypatch):
    # arm64 Linux: /proc/cpuinfo has part numbers only; lscpu turns them into a name.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n")
    monkeypatch.setattr(machine, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(machine.sys, "platform", "linux")
    monkeypatch.setattr(machine.shutil, "which", lambda name: "/usr/bin/lscpu")
    lscpu = "Architecture:        aarch64\nVendor ID:           ARM\nModel name:          Neoverse-N1\n"
    monkeypatch.setattr(
        machine.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=lscpu, stderr="")
    )
    assert machine.cpu_model() == "Neoverse-N1"


def test_cpu_model_survives_a_failing_command(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n")
    monkeypatch.setattr(machine, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(machine.shutil, "which", lambda name: "/usr/bin/" + name)

    def failing_run(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 1)

    monkeypatch.setattr(machine.subprocess, "run", failing_run)
    monkeypatch.setattr(machine.platform, "processor", lambda: "x86_64")
    assert machine.cpu_model() == "x86_64"


def test_blas_info_is_none_without_threadpoolctl(monkeypatch):
    real_import = builtins.__import__

    def no_threadpoolctl(name, *args, **kwargs):
        if name == "threadpoolctl":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_threadpoolctl)
    assert machine.blas_info() is None


def test_scipy_entry_prefers_the_linked_name_over_numpy_s():
    numpy_blas = {"filepath": "/site/numpy.libs/libscipy_openblas64_-aaaa.so"}
    scipy_blas = {"filepath": "/site/scipy.libs/libscipy_openblas-bbbb.so"}
    module_bytes = b"\0libm.so.6\0libscipy_openblas-bbbb.so\0"
    assert machine._scipy_entry([numpy_blas, scipy_blas], module_bytes, "/site/scipy") is scipy_blas
    # Not named (another loader's path syntax): the one in scipy's own folder.
    assert machine._scipy_entry([numpy_blas, scipy_blas], b"", "/site/scipy") is scipy_blas
    assert machine._scipy_entry([numpy_blas], b"", "/site/scipy") is numpy_blas  # the only one
    assert machine._scipy_entry([], b"", "/site/scipy") is None
