"""FVD (Fast Virtual Disk, the 2011 IBM proposal): best-effort, built from the description only."""
