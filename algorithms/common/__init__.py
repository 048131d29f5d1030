"""Physics utilities shared by every branch: particle data from `particle` (dense tables) and the
LHCb decay-descriptor parser.  Branches import these instead of each other."""
