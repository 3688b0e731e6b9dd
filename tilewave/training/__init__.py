"""Fine-tuning tilewave's networks: the degradations real scans carry
(:mod:`.degradation`), crops and pairs of real images, the networks behind one interface,
and the resumable loop (:mod:`.finetune`) that ``tools/train_scan_models.py`` and
``tilewave tune`` share."""
