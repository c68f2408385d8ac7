"""Which time loop a recurrent layer runs: ``lax.scan``, an associative scan or the Pallas kernels.

The experiment file's ``[model] time_loop`` (``lrd.models.network.ModelConfig``):

  "auto"       (default) the kernels on a GPU when the model fits them, else the scan;
               until ``scripts/gpu_check.sh`` has passed on a GPU (``GPU_CHECKED``), the scan.
               A cell linear in its state (``Cell.parallel``: deltanet, gated_deltanet, lru, mamba2,
               mingru, minlstm, s4d, s6):
               its parallel form off the CPU, its step in ``lax.scan`` on the CPU, where
               the step is faster (``scripts/bench.py --parallel-only``: the associative
               scan does O(T log T) work, and 2 cores cannot make up for it)
  "scan"       always ``lax.scan`` of the cell's step (the CPU path; the committed results)
  "parallel"   a cell linear in its state: its ``sequence``, ``jax.lax.associative_scan``
               over T; an error for any other cell
  "kernel"     the kernels, compiled with Triton; an error where they cannot run
  "interpret"  the kernels in Pallas's interpret mode, on any device: slow, for tests

The kernels fit when the cell is one of the built-in rnn, lstm, gru (a cell added
by a user runs on the scan) and the hidden size is a power of two from 16 to
``MAX_HIDDEN``: Triton works on power-of-two tiles of at least 16 rows and columns.

Where U does not fit on chip (the LSTM's 4H x H fp32 is 256 KB at H = 128, above an
H200 SM's 228 KB of shared memory): U is held on chip when it takes at most
``RESIDENT_BYTES``; larger U is re-read from L2 at every step (a GPU's L2, 50 MB on
an H200, holds it: 1 MB for the largest allowed, an LSTM at H = 256). Beyond
``MAX_HIDDEN`` the scan runs ("auto"), or forcing "kernel" is refused.
"""

from __future__ import annotations

from typing import Literal

from lrd.models.cells import CELLS, GRUCell, LSTMCell, RNNCell
from lrd.models.kernels.equations import GATES

TimeLoop = Literal["auto", "scan", "parallel", "kernel", "interpret"]
TIME_LOOPS: tuple[str, ...] = ("auto", "scan", "parallel", "kernel", "interpret")
Path = Literal["scan", "parallel", "kernel", "interpret"]
KERNEL_CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
MIN_HIDDEN = 16
MAX_HIDDEN = 256
# The kernels are tested on the CPU in Pallas's interpreter and through Triton's lowering, but have
# not yet been compiled and checked on a GPU: until scripts/gpu_check.sh passes there, "auto" keeps
# the scan and the kernels run only where "kernel" is asked for.
GPU_CHECKED = False
RESIDENT_BYTES = 64 * 1024  # U kept in registers / shared memory up to this size (RNN to H=128, LSTM/GRU to H=64)


def model_reason(cell: str, hidden: int) -> str | None:
    """Why the kernels cannot run this model, or None when they can."""
    if CELLS.get(cell) is not KERNEL_CELLS.get(cell):
        return f"the kernels cover the built-in cells {', '.join(KERNEL_CELLS)} only, not {cell!r}"
    if not (MIN_HIDDEN <= hidden <= MAX_HIDDEN) or hidden & (hidden - 1):
        return f"the kernels need hidden to be a power of two from {MIN_HIDDEN} to {MAX_HIDDEN} (got {hidden})"
    return None


def backend_reason(backend: str) -> str | None:
    """Why compiled kernels cannot run on ``backend`` (jax.default_backend()), or None."""
    if backend != "gpu":
        return f"compiled kernels need a GPU, and JAX runs on {backend} here (use 'interpret' for the interpreter)"
    return None


def parallel_reason(cell: str) -> str | None:
    """Why ``cell`` has no parallel form, or None when it has one."""
    if cell in CELLS and CELLS[cell].parallel:
        return None
    having = ", ".join(sorted(name for name, cls in CELLS.items() if cls.parallel))
    return f"cell {cell!r} is not linear in its state: no parallel form (cells that have one: {having})"


def choose(time_loop: str, cell: str, hidden: int, backend: str) -> Path:
    """The time loop a layer runs; raises ValueError (naming the key) where a forced path cannot run."""
    if time_loop == "scan":
        return "scan"
    if time_loop == "parallel" or (time_loop == "auto" and parallel_reason(cell) is None):
        reason = parallel_reason(cell)
        if reason:
            raise ValueError(f"time_loop = 'parallel': {reason}")
        return "parallel" if time_loop == "parallel" or backend != "cpu" else "scan"
    reason = model_reason(cell, hidden)
    if time_loop != "interpret":
        reason = reason or backend_reason(backend)
    if time_loop == "auto":
        return "kernel" if GPU_CHECKED and not reason else "scan"
    if reason:
        raise ValueError(f"time_loop = {time_loop!r}: {reason}")
    return "interpret" if time_loop == "interpret" else "kernel"


def resident(cell: str, hidden: int) -> bool:
    """Whether U (H, G*H), fp32, is held on chip for the whole loop (else re-read from L2 each step)."""
    return 4 * hidden * GATES[cell] * hidden <= RESIDENT_BYTES
