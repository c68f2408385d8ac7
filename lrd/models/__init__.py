"""Recurrent cells (registry ``CELLS``, decorator ``register``) and the layers that run them."""

from lrd.models import (  # noqa: F401  (register the built-in cells)
    attention,
    deltanet,
    exprnn,
    gated_deltanet,
    irnn,
    lru,
    mamba2,
    mingru,
    minlstm,
    s4d,
    s6,
)
from lrd.models.cells import CELLS, Cell, GRUCell, LSTMCell, MatrixCell, RNNCell, perturbed, register
from lrd.models.network import ModelConfig, Perturbation, RecurrentLayer, SequenceModel, parameter_count

__all__ = [
    "CELLS",
    "Cell",
    "GRUCell",
    "LSTMCell",
    "MatrixCell",
    "ModelConfig",
    "Perturbation",
    "RNNCell",
    "RecurrentLayer",
    "SequenceModel",
    "parameter_count",
    "perturbed",
    "register",
]
