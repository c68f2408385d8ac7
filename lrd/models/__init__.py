"""Recurrent cells (``CELLS``) and the layers that scan them."""

from lrd.models.cells import CELLS, Cell, GRUCell, LSTMCell, RNNCell
from lrd.models.network import ModelConfig, Perturbation, RecurrentLayer, SequenceModel

__all__ = [
    "CELLS",
    "Cell",
    "GRUCell",
    "LSTMCell",
    "ModelConfig",
    "Perturbation",
    "RNNCell",
    "RecurrentLayer",
    "SequenceModel",
]
