"""cctrnet: self-configuring semi-supervised 2D segmentation of 3D medical volumes (CCT-R)."""

__version__ = "0.1.0"
