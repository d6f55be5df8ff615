"""Running a whole single-node install on one machine (``swiftmail up``)."""
