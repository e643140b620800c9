"""planning stage of the cctrnet pipeline."""
