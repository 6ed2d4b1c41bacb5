"""Cycle models of the accelerator: the systolic array and the vector engine."""
