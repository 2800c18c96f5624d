"""Channel mixers (FFNs) of a block."""
