"""The training loop, optimisers and checkpointing."""
