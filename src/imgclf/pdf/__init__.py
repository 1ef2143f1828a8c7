"""PDFs in: page 1 of a PDF rendered as the original tool rendered it (docs/pdfs.md).

A bottom-layer package beside images.py: the trainer and the client both use it, it needs no
TensorFlow, and it imports nothing of theirs."""
