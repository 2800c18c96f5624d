"""Training through Lightning: ``mixarch fit|validate|test|predict`` (a LightningCLI), the LightningModule
around :class:`~mixarch.model.hybrid.HybridLM`, metrics and exporting checkpoints.

Importing this package does not import Lightning (the blueprint schema uses :mod:`mixarch.train.schema`);
import :mod:`mixarch.train.module` or :mod:`mixarch.train.cli` for the Lightning parts.
"""
