"""Training data: two streams (labeled, unlabeled) of augmented 2D slices with per-pixel voxel coordinates."""
from cctrnet.training.data.augmentation import AugmentationSettings, SpatialParameters
from cctrnet.training.data.loader import DataLoaderSettings, TrainingDataLoader
from cctrnet.training.data.patch_extraction import IGNORE_LABEL, INVALID_COORDINATE, extract_patch
from cctrnet.training.data.slice_dataset import SliceSource, build_volume_index

__all__ = ["AugmentationSettings", "SpatialParameters", "DataLoaderSettings", "TrainingDataLoader",
           "IGNORE_LABEL", "INVALID_COORDINATE", "extract_patch", "SliceSource", "build_volume_index"]
