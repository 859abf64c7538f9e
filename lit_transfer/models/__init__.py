"""Backbones (timm) and heads."""

from lit_transfer.models import small_cnn  # noqa: F401 - registers small_cnn with timm
from lit_transfer.models.backbone import Backbone, LayerGroup, create_backbone_model
from lit_transfer.models.heads import CosineHead, Head, LinearHead, MLPHead

__all__ = ["Backbone", "LayerGroup", "create_backbone_model", "Head", "LinearHead", "MLPHead", "CosineHead"]
