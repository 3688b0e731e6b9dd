"""What the shipped models were trained on, as ``tilewave models`` says it (one phrase
each, shared by the families that were trained the same way)."""

#: The official SPAN weights, and tilewave's uniba-x2 (``tools/train_uniba_x2.py``).
CLEAN = "clean images (antialiased-bicubic-downscaled photos)"
#: The scan-aware models (``tools/train_scan_models.py``).
SCANS = ("scans as they come: JPEG-compressed (quality 30-95; 4:2:0, 4:4:4 or RGB), noisy, "
         "box- or bicubic-downscaled, 16-bit ranges")
