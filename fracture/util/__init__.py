"""Small helpers with one home each: atomic writes and digests, JSON, worker processes, the training allocator."""
