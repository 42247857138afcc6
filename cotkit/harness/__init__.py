"""Shared steps every method and command calls: sample, verify, train, evaluate."""
