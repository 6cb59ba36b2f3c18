"""The layer under everything: reading and writing files safely (checked checkpoints, atomic writes, verified
downloads) and the names of what a run writes."""
