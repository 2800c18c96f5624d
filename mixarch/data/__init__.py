"""Data for training, all generated or local and seeded: MQAR (zoology's semantics), token-level passkey
and noise-haystack NIAH, and packed text from local files.

``DATAMODULES`` maps the names usable in a blueprint's ``train.data.type`` to DataModule class paths
(imported only when used, so this package does not import Lightning).
"""

from __future__ import annotations

DATAMODULES = {
    "mqar": "mixarch.data.mqar.MQARDataModule",
    "passkey": "mixarch.data.passkey.PasskeyDataModule",
    "niah": "mixarch.data.niah.NIAHDataModule",
    "text": "mixarch.data.text.TextDataModule",
}
