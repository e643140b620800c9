"""evaluation stage of the cctrnet pipeline."""
