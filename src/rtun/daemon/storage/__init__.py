"""Where received bytes go: directories opened without following links, temporary files placed
under their final names only when complete, the free-space check, and the sweep of leftovers.
Nothing here knows about connections or requests; it raises the one rejection type."""
