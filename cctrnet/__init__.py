"""cctrnet: self-configuring semi-supervised 2D segmentation of 3D medical volumes (CCT-R)."""

__version__ = "0.1.0"

from cctrnet.utilities.third_party_warnings import silence_known_warnings as _silence_known_warnings

_silence_known_warnings()
