"""convene's protocol layer: pure functions over bytes and values, no I/O.

Nothing here opens a socket or a file, reads the clock or draws randomness: time,
nonces and key seeds come in as arguments, so every rule can be checked offline
and the node and the auditor run exactly the same code.
"""
