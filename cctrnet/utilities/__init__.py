"""utilities stage of the cctrnet pipeline."""
