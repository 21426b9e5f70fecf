"""qcow version 1: header, two-level tables with compressed clusters, imgscope's own check."""
