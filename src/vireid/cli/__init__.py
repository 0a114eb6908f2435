"""The vireid command line."""
