"""HTTP/1.1 on httptools: `protocol.HttpProtocol` serves the ASGI `http` scope and hands
WebSocket upgrades over to the WebSocket layer."""
