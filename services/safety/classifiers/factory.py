"""Build the configured classifier (imports stay local so unused backends cost nothing)."""

from __future__ import annotations

from services.safety.classifiers.base import Classifier
from services.safety.config import SafetyConfig
from services.safety.policy import Policy


def build_classifier(config: SafetyConfig, policy: Policy) -> Classifier:
    if config.classifier == "embedded":
        from services.safety.classifiers.embedded import EmbeddedClassifier, EmbeddedConfig

        return EmbeddedClassifier(
            EmbeddedConfig(
                head_path=config.head_path,
                encoder_dir=config.encoder_dir,
                device=config.device,
                dtype=config.dtype,
                compile=config.compile,
                pack_rows=config.pack_rows,
                lean=config.lean_encoder,
                decision_points=tuple(sorted({c.threshold for c in policy.enabled})),
            )
        )
    assert config.model_dir is not None
    if config.classifier == "llama-guard":
        from services.safety.classifiers.llama_guard import LlamaGuardClassifier, LlamaGuardConfig

        return LlamaGuardClassifier(
            LlamaGuardConfig(
                model_dir=config.model_dir,
                version=config.llama_guard_version,
                device=config.device,
                dtype=config.dtype,
            ),
            policy,
        )
    from services.safety.classifiers.sequence import SequenceClassifier, SequenceConfig, load_label_map

    assert config.label_map is not None
    return SequenceClassifier(
        SequenceConfig(
            config.model_dir,
            load_label_map(config.label_map),
            device=config.device,
            dtype=config.dtype,
        )
    )
