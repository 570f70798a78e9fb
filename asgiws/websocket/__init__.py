"""The WebSocket protocol, sans-I/O: opening handshake, permessage-deflate, the connection state
machine. Bytes in, events and bytes out; no sockets and no asyncio here."""
