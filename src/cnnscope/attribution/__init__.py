"""Attribution maps, batched and on the model's device.

Class-activation methods (:mod:`.cam`) weight a layer's feature maps; backpropagation methods
(:mod:`.backprop`) change the ReLU's backward rule. Every method is a context manager, so no hook
outlives it and the model is left as it was::

    with GradCAM(model, "layer4") as cam:
        maps = cam(images)              # (N, H, W), one target per image (default: predicted class)
"""

from cnnscope.attribution.backprop import DeconvNet, GuidedBackprop, guided, guided_cam
from cnnscope.attribution.cam import CAM, CounterfactualGradCAM, GradCAM, GradCAMPlusPlus
from cnnscope.attribution.suite import METHODS, attribute

__all__ = [
    "CAM",
    "METHODS",
    "CounterfactualGradCAM",
    "DeconvNet",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "attribute",
    "guided",
    "guided_cam",
]
