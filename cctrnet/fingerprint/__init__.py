"""fingerprint stage of the cctrnet pipeline."""
