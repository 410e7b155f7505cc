"""Backbones: CIFAR ResNets, bottleneck ResNets and MobileNetV2, each a function that builds a
:class:`~dmnn.network.dynamic_net.DynamicNet` with N sub-blocks and a gate factory, listed in its
module's ``BACKBONES``. Nothing registers on import (see :func:`dmnn.registry.builtin_backbones`).
"""
