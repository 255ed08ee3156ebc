"""ActivityPub transport: discovery, HTTP Signatures, inbox, durable delivery."""
