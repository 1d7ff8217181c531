"""HyperMask (Książek & Spurek, arXiv 2310.00113): hypernetwork-generated semi-binary masks per task."""

from maskcl.methods.hypermask.hypernetwork import HyperNetwork, auto_size, hypernetwork_parameters
from maskcl.methods.hypermask.method import HyperMask, HyperMaskConfig, HyperMaskNet, semi_binary_mask

__all__ = [
    "HyperMask",
    "HyperMaskConfig",
    "HyperMaskNet",
    "HyperNetwork",
    "auto_size",
    "hypernetwork_parameters",
    "semi_binary_mask",
]
