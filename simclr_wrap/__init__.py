"""SimCLR self-supervised learning as a Keras-style wrapper around any Keras backbone."""

from simclr_wrap.callbacks import NonFiniteLossError
from simclr_wrap.layers import SoftmaxCosineSim
from simclr_wrap.losses import NTXent, contrastive_accuracy, nt_xent
from simclr_wrap.model import SimCLR

__version__ = "0.1.0"
__all__ = ["SimCLR", "NonFiniteLossError", "SoftmaxCosineSim", "NTXent", "nt_xent", "contrastive_accuracy", "__version__"]
