"""``tilewave view OUTPUT [INPUT]``: a local web page to look at an output, beside its
input, while or after it is computed.

:mod:`.sources` reads tiles of the output's pyramid and of the input (upscaled for
comparison) in one coordinate frame, :mod:`.render` turns them into PNGs, :mod:`.server`
serves them with the page on 127.0.0.1. The page (``static/``) is this package's own
JavaScript, with no library and nothing fetched from elsewhere.
"""
