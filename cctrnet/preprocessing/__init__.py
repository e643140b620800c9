"""preprocessing stage of the cctrnet pipeline."""
