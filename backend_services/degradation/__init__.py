"""The pure core of graceful degradation: levels, thresholds, the level policy, feature
gating, load shedding and fleet records. No I/O, no asyncio, no clock reads."""

from .events import DegradationEvent
from .gating import ALLOWED_PRIORITIES, Feature, FeatureGate, allowed
from .levels import (
    DEFAULT_THRESHOLDS,
    DegradationLevel,
    FeaturePriority,
    ResourceThreshold,
    ResourceType,
    build_thresholds,
)
from .policy import Change, DegradationPolicy, LevelTracker, Override
from .shedding import AdmissionController, AimdLimit

__all__ = [
    "ALLOWED_PRIORITIES",
    "DEFAULT_THRESHOLDS",
    "AdmissionController",
    "AimdLimit",
    "Change",
    "DegradationEvent",
    "DegradationLevel",
    "DegradationPolicy",
    "Feature",
    "FeatureGate",
    "FeaturePriority",
    "LevelTracker",
    "Override",
    "ResourceThreshold",
    "ResourceType",
    "allowed",
    "build_thresholds",
]
