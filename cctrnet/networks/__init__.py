"""Network construction from the architecture entries of a plan."""
