"""training stage of the cctrnet pipeline."""
