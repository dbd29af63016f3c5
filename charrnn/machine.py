"""What machine this is: the CPU's model name and the BLAS library charrnn's matrix products run on.

Plain Python, so it answers quickly and without compiling anything (the benchmark's header,
`charrnn info --machine`). Nothing here raises: a question this OS cannot answer gets a fallback
(the CPU) or None (the BLAS).

Numba's matrix products (np.dot, charrnn.kernels.blas) call the BLAS that scipy.linalg.cython_blas
links to. A process usually has a second one loaded, numpy's own OpenBLAS, exporting the same names
and often the same version, so "which BLAS" means picking scipy's among threadpoolctl's entries.
"""

import os
import platform
import shutil
import subprocess
import sys

CPUINFO = "/proc/cpuinfo"
# Keys of /proc/cpuinfo that name the processor, by architecture: x86 and many others, MIPS,
# 32-bit ARM boards, PowerPC. arm64 kernels print none of these (only part numbers).
CPUINFO_MODEL_KEYS = ("model name", "cpu model", "hardware", "cpu")
COMMAND_TIMEOUT_S = 2.0


def cpu_model():
    """The CPU's model name, e.g. "AMD EPYC 7B13"; the architecture (or "unknown") when no better."""
    for source in (_cpuinfo_model, _macos_brand_string, _lscpu_model):
        name = source()
        if name:
            return name
    return platform.processor() or platform.machine() or "unknown"


def _cpuinfo_model():
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as cpuinfo:
            fields = {}
            for line in cpuinfo:
                key, colon, value = line.partition(":")
                if colon and value.strip():
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        return None
    return next((fields[key] for key in CPUINFO_MODEL_KEYS if key in fields), None)


def _macos_brand_string():
    if sys.platform != "darwin":
        return None
    return _command_output(["sysctl", "-n", "machdep.cpu.brand_string"])


def _lscpu_model():
    """lscpu's "Model name": on arm64 Linux it turns the part number into a name (Neoverse-N1)."""
    if not sys.platform.startswith("linux") or shutil.which("lscpu") is None:
        return None
    output = _command_output(["lscpu"]) or ""
    for line in output.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() == "Model name" and value.strip() not in ("", "-"):
            return value.strip()
    return None


def _command_output(command):
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env={**os.environ, "LC_ALL": "C"}
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def blas_info():
    """The BLAS behind Numba's products, as a dict, or None when it cannot be told.

    {"library": "openblas" (or "mkl", "blis", ...), "version", "kernel": the code path it picked
    for this CPU ("Haswell", "SkylakeX", "Zen", "neoversen1"; None where the library does not say),
    "threads": its thread count, "filepath"}.
    """
    try:
        import scipy.linalg.cython_blas as cython_blas  # loads the library if nothing has yet
        from threadpoolctl import threadpool_info

        entries = [entry for entry in threadpool_info() if entry.get("user_api") == "blas"]
        with open(cython_blas.__file__, "rb") as module_file:
            module_bytes = module_file.read()
    except Exception:  # no scipy or threadpoolctl, an unreadable module, a library threadpoolctl trips on
        return None
    entry = _scipy_entry(entries, module_bytes, os.path.dirname(os.path.dirname(cython_blas.__file__)))
    if entry is None:
        return None
    return {
        "library": entry.get("internal_api"),
        "version": entry.get("version"),
        "kernel": entry.get("architecture"),
        "threads": entry.get("num_threads"),
        "filepath": entry.get("filepath"),
    }


def _scipy_entry(entries, module_bytes, scipy_dir):
    """The entry cython_blas links to: its file name is in the module's list of needed libraries
    (NUL-terminated on ELF, Mach-O and PE alike), else the one in scipy's own folders, else the only one."""
    for entry in entries:
        if os.path.basename(entry.get("filepath") or "").encode() + b"\0" in module_bytes:
            return entry
    # Wheels keep the library beside the package (scipy.libs, scipy/.dylibs) under a hashed name.
    site = os.path.dirname(scipy_dir)
    own_dirs = (os.path.join(site, "scipy.libs"), scipy_dir)
    for entry in entries:
        path = os.path.abspath(entry.get("filepath") or "")
        if any(path.startswith(folder + os.sep) for folder in own_dirs):
            return entry
    return entries[0] if len(entries) == 1 else None


def blas_summary(info):
    """One line for a blas_info() dict: "openblas 0.3.30, Haswell kernel, 2 threads"."""
    if not info:
        return "unknown (threadpoolctl found no BLAS scipy links to)"
    parts = [" ".join(str(info[key]) for key in ("library", "version") if info.get(key))]
    if info.get("kernel"):
        parts.append(f"{info['kernel']} kernel")
    if info.get("threads"):
        parts.append(f"{info['threads']} thread{'s' if info['threads'] != 1 else ''}")
    return ", ".join(part for part in parts if part)
