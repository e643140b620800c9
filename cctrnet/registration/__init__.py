"""registration stage of the cctrnet pipeline."""
