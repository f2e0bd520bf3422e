"""edgefleet agent: runs workflow graphs on an edge device.

Importing this package is cheap; heavy libraries are imported only by the modules that use them.
"""

__version__ = "0.1.0"
