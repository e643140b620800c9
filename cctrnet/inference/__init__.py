"""inference stage of the cctrnet pipeline."""
