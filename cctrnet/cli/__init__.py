"""cli stage of the cctrnet pipeline."""
