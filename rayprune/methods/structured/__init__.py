"""Structured pruning: GRAIN and its head/FFN variant (:mod:`.grain`) and the physically smaller
model classes their exports load into (:mod:`.models`)."""
