"""Process settings: the versions a result depends on, JAX's compilation cache, glibc's allocator.

``versions()`` names the Python and package versions of this process (saved beside
every results folder; a Ray worker must match the driver's). ``enable_compilation_cache()``
turns on JAX's persistent compilation cache.

The allocator settings make long training steps faster on CPU. XLA allocates
fresh buffers for every training step (about 1 GB per step at T = 1000, batch
128, hidden 128). With glibc's defaults every large buffer is a new ``mmap``
that the kernel zero-fills page by page on first touch and ``munmap``s when
freed, so a step pays for its memory again each time. Keeping freed memory in
the heap instead (no mmap, no trimming, one arena) made a T = 1000 LSTM step
1.46x faster (2.28 s -> 1.56 s, one core). It also made the default experiment,
whose time is mostly compilation, slower (2 min 18 s -> 3 min 12 s, fresh
compilation cache), so it is opt-in: ``LRD_MALLOC=tuned lrd run ...`` for long
sequences. The price is that the process keeps its peak memory until it exits.

glibc reads ``GLIBC_TUNABLES`` only at process start, so the ``lrd`` command
re-executes itself once with them set. On other platforms or C libraries
nothing happens.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

# what a result may depend on, recorded in versions.json
PACKAGES = ("lrd", "jax", "jaxlib", "flax", "optax", "numpy", "pandas", "pyarrow", "matplotlib", "pydantic")
MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.arena_max=1"
_MARK = "LRD_MALLOC"


def wants_malloc_settings() -> bool:
    """True when asked for (LRD_MALLOC=tuned), not yet applied, on Linux with glibc."""
    if os.environ.get(_MARK) != "tuned":
        return False
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def reexec_with_malloc_settings() -> None:
    """Restart this process with lrd's allocator settings (once); returns only if nothing to do."""
    if not wants_malloc_settings():
        return
    env = dict(os.environ)
    existing = env.get("GLIBC_TUNABLES")
    env["GLIBC_TUNABLES"] = MALLOC_TUNABLES if not existing else f"{existing}:{MALLOC_TUNABLES}"
    env[_MARK] = "applied"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def versions() -> dict[str, str]:
    """Python, the platform and the installed version of each of PACKAGES ("not installed" if absent)."""
    found = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu()}
    found["xla_flags"] = os.environ.get("XLA_FLAGS", "")  # --xla_cpu_max_isa=AVX2 changes the numbers as a CPU does
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu() -> str:
    """The CPU and the vector instructions XLA can use on it, e.g. "AMD EPYC (avx512f, avx2, fma)".

    float32 results depend on them in the last bits (XLA picks kernels per instruction set),
    so versions.json records them and ``lrd verify`` names them (README, "Checking a results folder").
    """
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    simd = [f for f in ("avx512f", "avx2", "fma", "neon", "asimd") if f in flags]
    return f"{name} ({', '.join(simd)})" if simd else name


def configure_jax() -> None:
    """JAX settings lrd relies on, before the first computation: CPU computations run inline.

    XLA's asynchronous CPU dispatch sometimes lost a training block's completion on this
    project's machine (README, "Reliability"); ``lrd/__init__.py`` sets the same through the
    environment for a process that imports lrd before JAX. Once JAX has made its CPU client
    the setting no longer applies (and changing it is harmless).
    """
    import jax

    if os.environ.get("JAX_CPU_ENABLE_ASYNC_DISPATCH", "false").lower() in ("0", "false"):
        jax.config.update("jax_cpu_enable_async_dispatch", False)


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache ($LRD_CACHE_DIR, default ~/.cache/lrd/jax) in this process."""
    import jax

    cache = Path(os.environ.get("LRD_CACHE_DIR", Path.home() / ".cache" / "lrd" / "jax"))
    cache.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
