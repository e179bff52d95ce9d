"""Rollout datasets: batches, storage, collection and loaders."""
