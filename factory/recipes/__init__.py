"""Pipeline recipes: configuration as data (models per stage, size laws, mixes, filters).

Nothing here calls an LLM or opens a network connection; 'auto' model specs are resolved by
factory.llm.auto.
"""

from factory.recipes.laws import RULES_LAW, TURNS_LAW, SizeLaw
from factory.recipes.model import (
    DialogueConfig,
    EndpointLimits,
    FilterConfig,
    LabelConfig,
    PolicyConfig,
    Recipe,
    TraceConfig,
    load_recipe,
)
from factory.recipes.names import BREAKS, DYNAMICS, LLM_STAGES, STAGES, Stage

__all__ = [
    "BREAKS",
    "DYNAMICS",
    "LLM_STAGES",
    "RULES_LAW",
    "STAGES",
    "TURNS_LAW",
    "DialogueConfig",
    "EndpointLimits",
    "FilterConfig",
    "LabelConfig",
    "PolicyConfig",
    "Recipe",
    "SizeLaw",
    "Stage",
    "TraceConfig",
    "load_recipe",
]
