"""Static twins: each DMNN model's N sub-blocks, always on (the ResNeXt-style grouped twin)."""

from ..models.factory import register_method
from ..models.options import TwinOptions

register_method("twin", "twin", TwinOptions, "Static twin (N always-on sub-blocks)")
