"""Frame sources that feed workflow runs: cameras, image folders and the synthetic camera."""
