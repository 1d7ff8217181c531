"""HyperMask (Książek & Spurek, arXiv 2310.00113): hypernetwork-generated semi-binary masks per task."""

from maskcl.hypermask.hypernetwork import HyperNetwork
from maskcl.hypermask.method import HyperMask, HyperMaskNet, semi_binary_mask

__all__ = ["HyperMask", "HyperMaskNet", "HyperNetwork", "semi_binary_mask"]
