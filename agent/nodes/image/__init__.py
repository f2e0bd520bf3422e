"""Image nodes: ``image_decode → crop → resize → normalize``.

They pass an ``agent.imaging.Image`` along: a lazily decoded region of a frame, so that
``resize`` can decode a JPEG at the reduced resolution its target needs. The node modules
import NumPy and OpenCV only when a graph using them is compiled.
"""

from agent.nodes.image.common import BadImage, BadRoi
from agent.nodes.image.crop import Crop
from agent.nodes.image.decode import ImageDecode
from agent.nodes.image.normalize import Normalize
from agent.nodes.image.resize import Resize

IMAGE_NODES = (ImageDecode, Crop, Resize, Normalize)

__all__ = ["IMAGE_NODES", "BadImage", "BadRoi", "Crop", "ImageDecode", "Normalize", "Resize"]
