"""edgefleet's wire contracts (package ``edgefleet.v1``): the ``.proto`` files and the Python
code generated from them, committed side by side. Regenerate with ``scripts/gen-protos``; a test
fails when the committed code differs from what the ``.proto`` files generate."""
