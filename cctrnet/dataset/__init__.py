"""dataset stage of the cctrnet pipeline."""
