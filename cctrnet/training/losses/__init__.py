"""Loss terms of the CCT-R trainer, one module per loss (see documentation/method.md)."""
