"""Checkpoints: the file format and its typed metadata, compatibility with a dataset, promotion into weights/."""
