"""Data, training and measurement for the safety classifier."""
