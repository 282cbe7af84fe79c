"""The C guest SDK: headers, freestanding libc subset, start-up code and linker scripts.

Nothing in this package runs on the host: it is data that
:mod:`spgs.cbuild` hands to gcc when it builds a C guest kernel or app.
``include/spk/abi.h`` is generated from :mod:`spk.abi` (a test checks it).
See docs/guest.md.
"""
