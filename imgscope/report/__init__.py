"""Reports over the model: leaks, fragmentation, plots and the standalone HTML report."""
